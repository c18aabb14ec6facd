"""Run Airflow's own CLI against a throw-away Airflow home, as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def airflow_env(home: Path, data_root: Path | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
    )
    if data_root is not None:
        env["AIRFLOW_BT_ROOT"] = data_root.as_uri()
    env.update(extra)
    return env


def dags_folder_in_zone(folder: Path, timezone: str) -> Path:
    """A copy of the repository's DAG folder whose configs cut days in ``timezone``."""
    import shutil

    shutil.copytree(REPO / "dags", folder, ignore=shutil.ignore_patterns("__pycache__"))
    for config in (folder / "configs").glob("*.yaml"):
        text = config.read_text()
        assert "  timezone: UTC\n" in text, f"{config}: no `timezone: UTC` line to replace"
        config.write_text(text.replace("  timezone: UTC\n", f"  timezone: {timezone}\n"))
    return folder


def airflow(env: dict[str, str], *args: str, timeout: float = 600, check: bool = True
            ) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(BIN / "airflow"), *args], env=env, capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"airflow {' '.join(args)} exited {proc.returncode}\n{proc.stdout[-4000:]}\n"
                             f"{proc.stderr[-4000:]}")
    return proc


def json_from_output(text: str) -> object:
    """The JSON document in a CLI's output (Airflow prints warnings on stdout too)."""
    for line in text.splitlines():
        if line.startswith(("[", "{")):
            try:
                return json.loads(line)
            except ValueError:
                continue  # a log line such as "[2026-06-24T00:00:00.000+0000] {plugins.py:37} INFO ..."
    raise AssertionError(f"no JSON in output:\n{text[-2000:]}")


# --- PostgreSQL as the metadata database, and long-running Airflow services --------------------------

PG_DSN = os.environ.get("AIRFLOW_BT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def postgres_unavailable_reason() -> str | None:
    """Why no PostgreSQL can be used for tests (None when one can)."""
    try:
        import psycopg2
    except ImportError:  # pragma: no cover
        return "psycopg2 is not installed"
    try:
        psycopg2.connect(PG_DSN, connect_timeout=3).close()
    except Exception as exc:
        return f"no PostgreSQL reachable at {PG_DSN} ({str(exc).strip().splitlines()[0]})"
    return None


class PostgresDatabase:
    """A throw-away database on the local server; ``url`` is its SQLAlchemy URL for Airflow."""

    def __init__(self, name: str) -> None:
        import psycopg2

        self.name = name
        self._admin = psycopg2.connect(PG_DSN)
        self._admin.autocommit = True
        with self._admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            cur.execute(f'CREATE DATABASE "{name}"')
        base = PG_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg2://", 1)
        self.url = f"{base}/{name}"
        self.dsn = PG_DSN.rsplit("/", 1)[0] + f"/{name}"

    def query(self, sql: str, *params: object) -> list[tuple]:
        import psycopg2

        with psycopg2.connect(self.dsn) as conn, conn.cursor() as cur:
            cur.execute(sql, params)
            return list(cur.fetchall())

    def drop(self) -> None:
        with self._admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        self._admin.close()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class AirflowServices:
    """Start Airflow's long-running components (e.g. scheduler, api-server) and stop them afterwards."""

    def __init__(self, env: dict[str, str], logs: Path, *components: list[str]) -> None:
        self.env, self.logs, self.components = env, logs, components
        self.procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> AirflowServices:
        self.logs.mkdir(parents=True, exist_ok=True)
        for args in self.components:
            log = (self.logs / f"{args[0]}.log").open("wb")
            self.procs.append(subprocess.Popen([str(BIN / "airflow"), *args], env=self.env, stdout=log,
                                               stderr=subprocess.STDOUT, start_new_session=True))
        return self

    def __exit__(self, *exc: object) -> None:
        import signal

        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def check_alive(self) -> None:
        for proc, args in zip(self.procs, self.components, strict=True):
            if proc.poll() is not None:
                tail = (self.logs / f"{args[0]}.log").read_text()[-3000:]
                raise AssertionError(f"airflow {args[0]} exited {proc.returncode}:\n{tail}")


def wait_for(predicate, what: str, services: AirflowServices, timeout: float = 300, describe=None) -> None:
    """Poll ``predicate`` (a state in the DB or the storage) until true; fail if a service died."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        services.check_alive()
        if predicate():
            return
        time.sleep(1)
    state = f"; state: {describe()}" if describe else ""
    raise AssertionError(f"timed out after {timeout} s waiting for {what}{state}")


def api_healthy(port: int) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


_TRIGGER_SCRIPT = '''
import json, sys
import pendulum
from airflow.api.client import get_current_api_client
from airflow_bt.compat import AIRFLOW_V3

dag_id, runs = sys.argv[1], json.loads(sys.argv[2])
client = get_current_api_client()
for run_id, date in runs:
    when = pendulum.parse(date)
    if AIRFLOW_V3:
        client.trigger_dag(dag_id, run_id=run_id, logical_date=when)
    else:
        client.trigger_dag(dag_id, run_id=run_id, execution_date=when)
'''


def trigger_dag_runs(env: dict[str, str], dag_id: str, runs: list[tuple[str, str]], timeout: float = 120) -> None:
    """``airflow dags trigger <dag_id> --run-id R --logical-date D`` for each ``(R, D)``, in one process.

    It calls the API client the CLI command calls (``get_current_api_client``); one interpreter for all
    runs saves the seconds of start-up each ``airflow`` command costs.
    """
    proc = subprocess.run([sys.executable, "-c", _TRIGGER_SCRIPT, dag_id, json.dumps(runs)], env=env,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"triggering {runs} exited {proc.returncode}\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-3000:]}")
