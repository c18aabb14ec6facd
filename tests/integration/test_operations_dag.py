"""Operations settings in a real DAG run: a failing prediction check stops publish, retention cleans scratch."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml
from airflow_env import REPO, airflow, airflow_env
from data_helpers import copy_demo, dag_folder

pytestmark = pytest.mark.integration
DS = "2026-06-24"


def test_a_failing_prediction_check_fails_publish_and_moves_no_pointer(airflow_home, demo_root, tmp_path):
    data = copy_demo(demo_root, tmp_path)
    checks = yaml.safe_load((REPO / "dags/configs/churn.yaml").read_text())["postprocess"]["checks"]
    checks["columns"]["churn_probability"]["range"] = [0, 0.5]
    folder = dag_folder(tmp_path, postprocess={"checks": checks})
    proc = airflow(airflow_env(airflow_home, data, AIRFLOW__CORE__DAGS_FOLDER=str(folder)),
                   "dags", "test", "churn_nightly_scoring", DS, check=False)
    log = proc.stdout + proc.stderr
    assert "prediction check(s) failed, so nothing was published" in log
    assert "setting postprocess.checks.columns.churn_probability.range" in log
    out = data / "output/churn" / f"dt={DS}"
    assert not (out / "_LATEST.json").exists()
    (attempt,) = [p for p in out.iterdir() if p.is_dir()]
    assert not (attempt / "_SUCCESS").exists()
    statistics = json.loads((attempt / "_manifest.json").read_text())["statistics"]
    assert statistics["columns"]["churn_probability"]["count"] == 3000


def test_retention_deletes_the_published_run_scratch_and_nothing_else(airflow_home, demo_root, tmp_path):
    data = copy_demo(demo_root, tmp_path)
    folder = dag_folder(tmp_path, retention={"work_days": 0})
    proc = airflow(airflow_env(airflow_home, data, AIRFLOW__CORE__DAGS_FOLDER=str(folder)),
                   "dags", "test", "churn_nightly_scoring", DS)
    log = proc.stdout + proc.stderr
    assert "state=failed" not in log
    assert "retention: deleted 1 run folder(s)" in log
    assert not list((data / "work/churn").rglob("*.csv"))  # the run's shards are gone
    latest = json.loads((data / "output/churn" / f"dt={DS}" / "_LATEST.json").read_text())
    attempt = Path(latest["attempt_prefix"].removeprefix("file://"))
    assert (attempt / "_SUCCESS").exists() and list(attempt.glob("part-*.parquet"))


SINK = '''
import json

def record(context, path, event):
    """Append the event and the run to ``path``: what a notifier would have sent."""
    run = context.get("dag_run")
    run_id = run.get("run_id") if isinstance(run, dict) else getattr(run, "run_id", None)
    with open(path, "a") as fh:
        fh.write(json.dumps({"event": event, "run_id": run_id}) + "\\n")
'''


def alerting_dag_folder(tmp_path: Path, sink: Path, **settings) -> Path:
    """The churn DAG with every alert recorded in ``sink``, and these top-level ``settings``."""
    alerts = {event: [{"notifier": "alert_sink.record", "args": {"path": str(sink), "event": event}}]
              for event in ("on_failure", "on_retry", "on_success", "on_deadline_miss")}
    folder = dag_folder(tmp_path, alerts=alerts)
    (folder / "alert_sink.py").write_text(SINK)  # the DAGs folder is on sys.path, as for any DAG helper
    config = yaml.safe_load((folder / "configs/churn.yaml").read_text())
    config.update(settings)
    (folder / "configs/churn.yaml").write_text(yaml.safe_dump(config))
    return folder


def events(sink: Path) -> list[str]:
    return [json.loads(line)["event"] for line in sink.read_text().splitlines()] if sink.exists() else []


def test_alerts_call_the_notifiers_once_per_failed_run_and_per_retry(airflow_home, demo_root, tmp_path):
    from data_helpers import corrupt_tenure

    data = copy_demo(demo_root, tmp_path)
    corrupt_tenure(data / "input/churn" / f"dt={DS}" / "customers-0002.csv")
    sink = tmp_path / "alerts.jsonl"
    folder = alerting_dag_folder(tmp_path, sink, retries=1, retry_delay_minutes=0)
    env = airflow_env(airflow_home, data, AIRFLOW__CORE__DAGS_FOLDER=str(folder))
    proc = airflow(env, "dags", "test", "churn_nightly_scoring", DS, check=False)
    assert proc.returncode != 0
    assert events(sink) == ["on_retry", "on_failure"]  # the transform's one retry, then the run's failure

    sink.unlink()
    healthy = copy_demo(demo_root, tmp_path / "healthy")
    airflow(airflow_env(airflow_home, healthy, AIRFLOW__CORE__DAGS_FOLDER=str(folder)),
            "dags", "test", "churn_nightly_scoring", DS)
    assert events(sink) == ["on_success"]


def scheduler_env(pg_database, tmp_path: Path, data: Path, folder: Path) -> tuple[dict[str, str], int]:
    from airflow_env import free_port

    port = free_port()
    env = airflow_env(
        tmp_path / "home", data, AIRFLOW__CORE__DAGS_FOLDER=str(folder),
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=pg_database.url, AIRFLOW__CORE__EXECUTOR="LocalExecutor",
        AIRFLOW__API__PORT=str(port), AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{port}/execution/",
        AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC="1", AIRFLOW__SCHEDULER__DAG_DIR_LIST_INTERVAL="5",
    )
    airflow(env, "db", "migrate")
    airflow(env, "dags", "reserialize")
    return env, port


def scheduler_components(port: int) -> list[list[str]]:
    """The scheduler, and on Airflow 3 the api-server and the dag-processor (which runs DAG callbacks)."""
    from airflow_bt.compat import AIRFLOW_V3

    return ([["api-server", "--port", str(port)], ["scheduler"], ["dag-processor"]] if AIRFLOW_V3
            else [["scheduler"]])


def trigger_the_day(env: dict[str, str], port: int, services) -> None:
    """Trigger the run of DS once the services answer, and unpause the DAG so that it runs."""
    from airflow_env import api_healthy, wait_for

    from airflow_bt.compat import AIRFLOW_V3

    if AIRFLOW_V3:
        wait_for(lambda: api_healthy(port), "the api-server", services, timeout=120)
    airflow(env, "dags", "trigger", "churn_nightly_scoring", "--logical-date" if AIRFLOW_V3 else "--exec-date",
            f"{DS}T00:00:00+00:00")
    airflow(env, "dags", "unpause", "churn_nightly_scoring")


def test_a_scheduled_failing_run_calls_the_failure_notifier_once(pg_database, demo_root, tmp_path):
    """With a real scheduler (and, on Airflow 3, the dag-processor that runs DAG callbacks) on Postgres."""
    from airflow_env import AirflowServices, wait_for
    from data_helpers import corrupt_tenure

    from airflow_bt.compat import AIRFLOW_V3

    data = copy_demo(demo_root, tmp_path)
    corrupt_tenure(data / "input/churn" / f"dt={DS}" / "customers-0002.csv")
    sink = tmp_path / "alerts.jsonl"
    # unpausing also schedules the latest closed day, which has no input and waits beside the test's run
    folder = alerting_dag_folder(tmp_path, sink, max_active_runs=3)
    env, port = scheduler_env(pg_database, tmp_path, data, folder)
    date_column = "logical_date" if AIRFLOW_V3 else "execution_date"
    with AirflowServices(env, tmp_path / "logs", *scheduler_components(port)) as services:
        trigger_the_day(env, port, services)
        wait_for(lambda: pg_database.query(
            f"SELECT state FROM dag_run WHERE dag_id='churn_nightly_scoring' AND {date_column}::date = %s::date", DS)
            == [("failed",)], "the run to fail", services, timeout=240)
        wait_for(lambda: "on_failure" in events(sink), "the failure notifier", services, timeout=120)
        time.sleep(5)  # a second call would come from the same scheduler loop; give it the time to show
    assert events(sink).count("on_failure") == 1


def test_a_run_held_past_its_deadline_calls_the_deadline_notifier(pg_database, demo_root, tmp_path):
    """Airflow 3: the Deadline Alert's callback; Airflow 2: dagrun_timeout fails the run, so on_failure."""
    from airflow_env import AirflowServices, wait_for

    from airflow_bt.compat import AIRFLOW_V3

    data = copy_demo(demo_root, tmp_path)
    for path in (data / "input/churn" / f"dt={DS}").iterdir():
        path.unlink()  # the run waits for input that does not come
    sink = tmp_path / "alerts.jsonl"
    folder = alerting_dag_folder(tmp_path, sink, max_active_runs=3, schedule={"run_at": "02:00", "timezone": "UTC"},
                                 deadline="02:01")
    env, port = scheduler_env(pg_database, tmp_path, data, folder)
    with AirflowServices(env, tmp_path / "logs", *scheduler_components(port)) as services:
        trigger_the_day(env, port, services)
        expected = "on_deadline_miss" if AIRFLOW_V3 else "on_failure"
        wait_for(lambda: expected in events(sink), f"the {expected} notifier, a minute after the run was queued",
                 services, timeout=300, describe=lambda: events(sink))
    assert "on_success" not in events(sink)
