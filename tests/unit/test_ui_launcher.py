"""`make ui`'s launcher (scripts/ui.py) without starting Airflow: where it binds, the login, and stopping.

The launcher with Airflow's real components is driven by tests/integration/test_ui_browser.py.
"""

from __future__ import annotations

import importlib.util
import json
import stat
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ui() -> ModuleType:
    spec = importlib.util.spec_from_file_location("airflow_bt_ui_launcher", REPO / "scripts" / "ui.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_binds_loopback_by_default_and_runs_no_nightly_schedule(ui, tmp_path, monkeypatch):
    for name in ("AIRFLOW_BT_UI_HOST", "AIRFLOW_BT_UI_PORT", "AIRFLOW__API__BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    args = ui.parse_args(["--home", str(tmp_path)])
    env = ui.ui_env(args)
    assert (env["AIRFLOW__API__HOST"], env["AIRFLOW__API__PORT"]) == ("127.0.0.1", "8080")
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:8080/execution/"
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert env["AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE"] == "False"
    assert "AIRFLOW__API__BASE_URL" not in env  # the UI works under whatever address a browser uses
    assert env["AIRFLOW_HOME"] == str(tmp_path.resolve())

    opened = ui.parse_args(["--home", str(tmp_path), "--host", "0.0.0.0", "--port", "8081", "--schedule"])
    env = ui.ui_env(opened)
    assert env["AIRFLOW__API__HOST"] == "0.0.0.0"
    assert ui.ui_url(opened) == "http://127.0.0.1:8081"  # what this machine opens, and the tasks' API
    assert "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE" not in env


def test_the_admin_password_is_made_once_private_and_reused(ui, tmp_path, monkeypatch):
    monkeypatch.delenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", raising=False)
    monkeypatch.delenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE", raising=False)
    monkeypatch.delenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", raising=False)
    env = ui.ui_env(ui.parse_args(["--home", str(tmp_path)]))
    first = ui.login_line(env, tmp_path)
    path = tmp_path / "simple_auth_manager_passwords.json.generated"
    password = json.loads(path.read_text())["admin"]
    assert first.startswith(f"login   : admin / {password}   ")
    assert len(password) >= 16
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ui.login_line(env, tmp_path) == first  # the next `make ui` prints the same login

    no_login = dict(env, AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="True")
    assert "none" in ui.login_line(no_login, tmp_path)


def test_stop_signals_again_then_kills_what_ignores_sigterm(ui, tmp_path):
    components = ui.Components({}, tmp_path)
    # a component that stops at once (its child too), and one that ignores SIGTERM, as does its child
    components.procs["polite"] = subprocess.Popen(["bash", "-c", "sleep 60 & wait"], start_new_session=True)
    components.procs["stubborn"] = subprocess.Popen(["bash", "-c", 'trap "" TERM; sleep 60 & wait; wait'],
                                                    start_new_session=True)
    deadline = time.monotonic() + 10
    while len(components.session_members()) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(components.session_members()) == 4, components.session_members()

    termed, killed = components.stop(first=0.5, second=0.5)
    assert components.procs["stubborn"].pid in termed and components.procs["stubborn"].pid in killed
    assert components.procs["polite"].pid not in termed
    assert components.session_members() == {}
