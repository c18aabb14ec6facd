"""`make ui`: Airflow's UI, scheduler, dag-processor and triggerer on the demo's home, without Docker.

Runs on the Airflow home that `make demo` made (`.airflow/`, SQLite) with the repository's DAGs and the
demo data, binds 127.0.0.1:8080 by default, prints the URL and the login once every component reports
healthy, and stops every process it started (and the tasks they run) on Ctrl-C or SIGTERM: SIGTERM to the
components, after 10 s SIGTERM to whatever is left of their sessions (LocalExecutor waits for running tasks
until it is signalled again), after 30 s SIGKILL.

    python scripts/ui.py [--home .airflow] [--host 127.0.0.1] [--port 8080] [--dags-folder dags]
                         [--data-root file:///.../demo-data] [--schedule]

Airflow 3 only (the api-server, the standalone dag-processor and SimpleAuthManager). The executor is
LocalExecutor, which Airflow 3 runs on SQLite (as `airflow standalone` does). The login is the user
``admin`` (role admin) of Airflow's SimpleAuthManager; its password is generated once and kept in
``<home>/simple_auth_manager_passwords.json.generated``. ``[core] simple_auth_manager_users`` or
``simple_auth_manager_all_admins`` set in the environment are honoured instead. The scheduler starts no
nightly run unless ``--schedule`` is given (the demo data holds only a few June days, so a nightly run would
wait hours for its input and, with ``max_active_runs: 1``, hold back the runs triggered from the UI).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
#: The api-server reads task logs from the home's files, so no log server (ports 8793/8794, all interfaces) runs.
ARGS = {"scheduler": ["--skip-serve-logs"], "triggerer": ["--skip-serve-logs"]}
#: The health endpoint's names of the components the UI needs.
HEALTH_KEYS = ("metadatabase", "scheduler", "triggerer", "dag_processor")
AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="make ui", description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, default=Path(os.environ.get("AIRFLOW_HOME_DIR", REPO / ".airflow")),
                        help="the Airflow home (default: the demo's .airflow/)")
    parser.add_argument("--host", default=os.environ.get("AIRFLOW_BT_UI_HOST", "127.0.0.1"),
                        help="interface the UI binds (default 127.0.0.1; $AIRFLOW_BT_UI_HOST)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("AIRFLOW_BT_UI_PORT", "8080")),
                        help="the UI's port (default 8080; $AIRFLOW_BT_UI_PORT)")
    parser.add_argument("--dags-folder", type=Path, default=REPO / "dags")
    parser.add_argument("--data-root", default=os.environ.get("AIRFLOW_BT_ROOT") or (REPO / "demo-data").as_uri(),
                        help="the DAGs' data root (default: the demo's demo-data/; $AIRFLOW_BT_ROOT)")
    parser.add_argument("--schedule", action="store_true",
                        help="let the scheduler start the DAGs' nightly runs too (default: off, as the demo data "
                             "holds only a few June days: manual runs and backfills only)")
    parser.add_argument("--start-timeout", type=float, default=180.0,
                        help="seconds to wait for every component to report healthy")
    return parser.parse_args(argv)


def airflow_major() -> int:
    from importlib.metadata import version

    return int(version("apache-airflow").split(".")[0])


def ui_url(args: argparse.Namespace) -> str:
    """Where this machine reaches the UI (also the tasks' execution API)."""
    host = "127.0.0.1" if args.host in ("0.0.0.0", "::", "") else args.host
    return f"http://{f'[{host}]' if ':' in host else host}:{args.port}"


def ui_env(args: argparse.Namespace) -> dict[str, str]:
    """The components' environment: the demo's settings, a loopback UI, LocalExecutor, SimpleAuthManager.

    No ``[api] base_url``: the UI then works under whatever address a browser uses (``--host 0.0.0.0``).
    """
    home = args.home.resolve()
    url = ui_url(args)
    env = dict(os.environ)
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(args.dags_folder.resolve()),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW_BT_ROOT=args.data_root,
        AIRFLOW__CORE__EXECUTOR="LocalExecutor",
        AIRFLOW__CORE__AUTH_MANAGER=AUTH_MANAGER,
        AIRFLOW__API__HOST=args.host,
        AIRFLOW__API__PORT=str(args.port),
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"{url}/execution/",
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        PYTHONUNBUFFERED="1",
    )
    if not args.schedule:  # a nightly run of a day without demo data would wait hours for its input
        env["AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE"] = "False"
    env.setdefault("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "admin:admin")
    # One secret shared by the components that sign and check the tasks' and the UI's tokens (all started here).
    env.setdefault("AIRFLOW__API_AUTH__JWT_SECRET", secrets.token_urlsafe(32))
    # Two cores are plenty for the demo: one API worker, two parsing processes, a few task slots.
    env.setdefault("AIRFLOW__API__WORKERS", "1")
    env.setdefault("AIRFLOW__CORE__PARALLELISM", "4")
    return env


def login_line(env: dict[str, str], home: Path) -> str:
    """The login to print; makes the admin's password (once, kept in the home) where Airflow would."""
    if env.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "").lower() == "true":
        return "login   : none (simple_auth_manager_all_admins: everyone is admin)"
    users = env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"]
    path = Path(env.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE")
                or home / "simple_auth_manager_passwords.json.generated")
    passwords: dict[str, str] = json.loads(path.read_text() or "{}") if path.exists() else {}
    names = [entry.split(":")[0] for entry in users.split(",") if entry.strip()]
    missing = [name for name in names if name not in passwords]
    if missing:  # what SimpleAuthManager.init() would do at the api-server's start, done before it starts
        passwords.update({name: secrets.token_urlsafe(12) for name in missing})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(json.dumps(passwords) + "\n")
    shown = ", ".join(f"{name} / {passwords[name]}" for name in names)
    return f"login   : {shown}   (SimpleAuthManager; passwords kept in {path})"


def health(url: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"{url}/api/v2/monitor/health", timeout=5) as resp:
            return dict(json.load(resp))
    except (OSError, ValueError):
        return None


def unhealthy(report: dict[str, Any] | None) -> list[str]:
    if report is None:
        return ["api-server"]
    return [key for key in HEALTH_KEYS if (report.get(key) or {}).get("status") != "healthy"]


class Components:
    """The four Airflow processes, each the leader of its own session (so Ctrl-C reaches only us)."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs = env, logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        for name in COMPONENTS:
            with (self.logs / f"{name}.log").open("ab") as log:
                self.procs[name] = subprocess.Popen([str(BIN / "airflow"), name, *ARGS.get(name, [])],
                                                    env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                                    stdin=subprocess.DEVNULL, start_new_session=True)

    def exited(self) -> tuple[str, int] | None:
        for name, proc in self.procs.items():
            if (code := proc.poll()) is not None:
                return name, code
        return None

    def session_members(self) -> dict[int, str]:
        """The live processes of the components' sessions (they, their workers, their tasks): pid -> command."""
        sessions = {proc.pid for proc in self.procs.values()}
        members = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[3]) in sessions and fields[0] != "Z":  # fields[3]: the session id; Z: a zombie
                    members[int(stat.parent.name)] = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(
                        errors="replace").strip()
            except OSError:
                continue  # gone meanwhile
        return members

    def _signal_until_gone(self, pids: list[int], signum: signal.Signals, seconds: float) -> dict[int, str]:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)
        deadline = time.monotonic() + seconds
        while (left := self.session_members()) and time.monotonic() < deadline:
            for proc in self.procs.values():
                proc.poll()  # reaps an exited component
            time.sleep(0.2)
        return left

    def stop(self, first: float = 10.0, second: float = 20.0) -> tuple[dict[int, str], dict[int, str]]:
        """Stop everything: SIGTERM the components (they stop their workers and tasks); after ``first`` seconds
        SIGTERM every process left in their sessions (Airflow's "signal again if you don't want to wait"); after
        ``second`` more, SIGKILL. Returns the processes that needed the second SIGTERM, and those killed."""
        leaders = [proc.pid for proc in self.procs.values() if proc.poll() is None]
        termed = self._signal_until_gone(leaders, signal.SIGTERM, first)
        killed = self._signal_until_gone(list(termed), signal.SIGTERM, second) if termed else {}
        if killed:
            self._signal_until_gone(list(killed), signal.SIGKILL, 5)
        for proc in self.procs.values():
            proc.wait()
        return termed, killed


def migrate(env: dict[str, str], home: Path) -> None:
    log = home / "ui" / "db-migrate.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        code = subprocess.call([str(BIN / "airflow"), "db", "migrate"], env=env, stdout=out, stderr=subprocess.STDOUT)
    if code:
        sys.stdout.write(log.read_text()[-4000:])
        raise SystemExit(f"airflow db migrate failed (exit {code}); log: {log}")


class Stop(Exception):
    """SIGINT or SIGTERM arrived."""


def _raise_stop(signum: int, frame: object) -> None:
    raise Stop(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if airflow_major() < 3:
        print("make ui needs Airflow 3 (the api-server, dag-processor and SimpleAuthManager); this venv has "
              "Airflow 2. Use the default line: make demo && make ui", file=sys.stderr)
        return 2
    home = args.home.resolve()
    env = ui_env(args)
    url = ui_url(args)
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    started = time.monotonic()
    components = Components(env, home / "ui")
    try:
        if args.data_root.startswith("file://") and not Path(args.data_root.removeprefix("file://"), "input").is_dir():
            print(f"note: no input under {args.data_root} yet (make demo makes the demo data): runs will wait for it",
                  flush=True)
        print(f"== Airflow home {home}: airflow db migrate", flush=True)
        migrate(env, home)
        login = login_line(env, home)
        print(f"== starting {', '.join(COMPONENTS)} (logs: {home / 'ui'}/<component>.log)", flush=True)
        components.start()
        deadline = started + args.start_timeout
        while waiting := unhealthy(health(url)):
            if (dead := components.exited()) is not None:
                tail = (home / "ui" / f"{dead[0]}.log").read_text(errors="replace")[-3000:]
                print(tail, file=sys.stderr)
                raise SystemExit(f"airflow {dead[0]} exited {dead[1]} at start-up; log: {home / 'ui' / dead[0]}.log")
            if time.monotonic() > deadline:
                raise SystemExit(f"not healthy after {args.start_timeout:.0f} s: {', '.join(waiting)}; "
                                 f"logs under {home / 'ui'}")
            time.sleep(0.5)
        print(f"UI      : {url}", flush=True)
        print(login, flush=True)
        print(f"ready in {time.monotonic() - started:.1f} s (api-server, scheduler, dag-processor, triggerer; "
              f"LocalExecutor on SQLite, DAGs from {env['AIRFLOW__CORE__DAGS_FOLDER']})", flush=True)
        print("pids    : " + ", ".join(f"{name} {proc.pid}" for name, proc in components.procs.items())
              + " (each the leader of its session)", flush=True)
        print("nightly schedule: " + ("on" if args.schedule else "off (manual runs and backfills only; --schedule "
                                      "turns it on)"), flush=True)
        print("Ctrl-C stops them all.", flush=True)
        while (dead := components.exited()) is None:
            time.sleep(1)
        print(f"airflow {dead[0]} exited {dead[1]} (log: {home / 'ui' / dead[0]}.log); stopping the others",
              file=sys.stderr, flush=True)
        return 1
    except Stop as stop:
        print(f"\n{stop}: stopping {', '.join(components.procs) or 'nothing started yet'}", flush=True)
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not leave orphans behind
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        termed, killed = components.stop()
        for pid, command in termed.items():
            print(f"  still running after 10 s, sent SIGTERM: {pid} {command}", flush=True)
        for pid, command in killed.items():
            print(f"  still running after 30 s, SIGKILLed: {pid} {command}", flush=True)
        print("stopped" + (" (SIGKILL needed)" if killed else ""), flush=True)


if __name__ == "__main__":
    sys.exit(main())
