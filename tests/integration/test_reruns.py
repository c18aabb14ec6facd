"""Reruns with a real scheduler and PostgreSQL: every clear publishes a new attempt, nothing earlier changes.

Also: the publish step's outlet (Asset/Dataset) triggers a downstream DAG scheduled on it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import yaml
from airflow_env import (
    REPO,
    AirflowServices,
    airflow,
    airflow_env,
    api_healthy,
    free_port,
    wait_for,
)
from table_checks import assert_pointers_agree

from airflow_bt.compat import AIRFLOW_V3

pytestmark = [pytest.mark.integration, pytest.mark.slow]
DAG_ID = "churn_nightly_scoring"
DS = "2026-06-24"

DOWNSTREAM = '''
from __future__ import annotations
import os
import pendulum
from airflow_bt.compat import DAG, Asset
try:
    from airflow.providers.standard.operators.empty import EmptyOperator
except ImportError:
    from airflow.operators.empty import EmptyOperator

with DAG("churn_report", schedule=[Asset(os.environ["AIRFLOW_BT_ROOT"] + "/output/churn")],
         start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False):
    EmptyOperator(task_id="report")
'''


def dags_folder(tmp_path: Path, publish: dict) -> Path:
    """The shipped DAG file and config plus a downstream DAG.

    No retries; up to 3 active runs, and a 1-minute input timeout so that the one scheduled run
    unpausing creates (for the latest closed day, which has no input) fails fast beside the test's run.
    """
    folder = tmp_path / "dags"
    (folder / "configs").mkdir(parents=True)
    shutil.copy(REPO / "dags" / "scoring_dags.py", folder)
    config = (REPO / "dags" / "configs" / "churn.yaml").read_text()
    config = (config.replace("retries: 2", "retries: 0").replace("max_active_runs: 1", "max_active_runs: 3")
              .replace("timeout_minutes: 360", "timeout_minutes: 1"))
    settings = yaml.safe_load(config)
    settings["publish"] = publish  # the Iceberg table (a Glue catalog here: both lines) and a Hive table beside it
    (folder / "configs" / "churn.yaml").write_text(yaml.safe_dump(settings))
    (folder / "downstream.py").write_text(DOWNSTREAM)
    return folder


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """Every object under the data root with its checksum and mtime (the pointer excluded)."""
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "_LATEST.json"}


def complete_attempts(root: Path) -> list[str]:
    return sorted(p.parent.name for p in (root / "output/churn" / f"dt={DS}").glob("*/_SUCCESS"))


def test_clearing_tasks_publishes_new_attempts_and_changes_nothing_earlier(pg_database, demo_root, tmp_path,
                                                                          glue_catalogs):
    data = tmp_path / "data"
    shutil.copytree(demo_root / "input", data / "input")
    shutil.copytree(demo_root / "models", data / "models")
    port = free_port()
    env = airflow_env(
        tmp_path / "home", data,
        AIRFLOW__CORE__DAGS_FOLDER=str(dags_folder(tmp_path, glue_catalogs.publish_settings())),
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=pg_database.url,
        AIRFLOW__CORE__EXECUTOR="LocalExecutor",
        AIRFLOW__API__PORT=str(port),
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{port}/execution/",
        AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC="1",
        AIRFLOW__SCHEDULER__DAG_DIR_LIST_INTERVAL="5",
        **glue_catalogs.env(),
    )
    airflow(env, "db", "migrate")
    airflow(env, "dags", "reserialize")  # the DAGs exist in the DB before they are unpaused and triggered
    for dag_id in (DAG_ID, "churn_report"):
        airflow(env, "dags", "unpause", dag_id)
    components = [["api-server", "--port", str(port)], ["scheduler"]] if AIRFLOW_V3 else [["scheduler"]]

    date_column = "logical_date" if AIRFLOW_V3 else "execution_date"

    def run_state() -> list[str]:
        return [s for (s,) in pg_database.query(
            f"SELECT state FROM dag_run WHERE dag_id=%s AND {date_column}::date = %s::date", DAG_ID, DS)]

    def runs() -> list[tuple]:
        return pg_database.query(f"SELECT dag_id, run_id, {date_column}, state FROM dag_run ORDER BY id")

    with AirflowServices(env, tmp_path / "logs", *components) as services:
        if AIRFLOW_V3:
            wait_for(lambda: api_healthy(port), "the api-server", services, timeout=120)
        date_flag = "--logical-date" if AIRFLOW_V3 else "--exec-date"
        airflow(env, "dags", "trigger", DAG_ID, date_flag, f"{DS}T00:00:00+00:00")
        wait_for(lambda: run_state() == ["success"] and len(complete_attempts(data)) == 1, "the first run",
                 services, describe=runs)
        hive = glue_catalogs.hive_partition()
        assert_pointers_agree(data, "churn", DS, glue_catalogs.identifier, catalog=glue_catalogs.properties, glue=hive)
        wait_for(lambda: pg_database.query("SELECT state FROM dag_run WHERE dag_id='churn_report'")
                 == [("success",)], "the downstream DAG scheduled on the published asset", services,
                 timeout=120, describe=runs)

        # Plain task ids: Airflow 3.3 matches -t as a substring (2.x as a regex); each id is unique either way.
        reruns = [["-t", "wait_for_input"], ["-t", "shard"], ["-t", "transform"], ["-t", "publish"], []]
        for number, task_filter in enumerate(reruns, start=2):
            before = snapshot(data)
            airflow(env, "tasks", "clear", DAG_ID, *task_filter, "-s", DS, "-e", DS, "-d", "-y")
            wait_for(lambda n=number: run_state() == ["success"] and len(complete_attempts(data)) == n,
                     f"rerun {task_filter or 'of the whole run'}", services, describe=runs)
            after = snapshot(data)
            changed = [k for k, v in before.items() if after.get(k) != v]
            assert changed == [], f"clearing {task_filter or 'the run'} changed earlier objects: {changed}"
            latest = json.loads((data / "output/churn" / f"dt={DS}" / "_LATEST.json").read_text())
            newest = [a for a in complete_attempts(data) if f"output/churn/dt={DS}/{a}/_SUCCESS" not in before]
            assert len(newest) == 1 and latest["attempt_prefix"].rstrip("/").endswith(newest[0])
            # the table's day and the Hive partition moved with _LATEST.json: one copy of the day, the newest
            assert_pointers_agree(data, "churn", DS, glue_catalogs.identifier, catalog=glue_catalogs.properties,
                                  glue=hive)
