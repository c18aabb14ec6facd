"""Backfills with the real CLI against PostgreSQL: exact dates, and reruns that add attempts.

Airflow 2: ``airflow dags backfill -s 2026-06-01 -e 2026-06-03 churn_nightly_scoring``.
Airflow 3: ``airflow backfill create --dag-id churn_nightly_scoring --from-date ... --to-date ...``
with a running scheduler and api-server (the execution API the task runner talks to).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml
from airflow_env import (
    AirflowServices,
    airflow,
    airflow_env,
    api_healthy,
    dags_folder_in_zone,
    free_port,
    wait_for,
)
from table_checks import GlueCatalogs, assert_pointers_agree, read_parts

from airflow_bt.compat import AIRFLOW_V3
from airflow_bt.demo.data import generate_range
from airflow_bt.demo.model import train_model

pytestmark = [pytest.mark.integration, pytest.mark.slow]
DATES = ["2026-06-01", "2026-06-02", "2026-06-03"]
DAG_ID = "churn_nightly_scoring"


@pytest.fixture
def backfill_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("backfill-data")
    generate_range(str(root), "churn", DATES[0], DATES[-1], rows=1000, files=2)
    train_model(str(root / "models" / "churn"), rows=3000)
    return root


def attempts(root: Path, ds: str) -> dict[str, dict[str, str]]:
    """Each attempt folder of a date -> {file: sha256} (complete attempts only)."""
    out: dict[str, dict[str, str]] = {}
    date_root = root / "output/churn" / f"dt={ds}"
    inputs = sorted((root / "input/churn" / f"dt={ds}").glob("*.csv"))
    input_rows = [row for path in inputs for row in path.read_text().splitlines()[1:]]
    for folder in sorted(p for p in date_root.iterdir() if p.is_dir()):
        assert (folder / "_SUCCESS").exists(), f"{folder} has no _SUCCESS"
        manifest = json.loads((folder / "_manifest.json").read_text())
        published = read_parts(folder)
        # exactly one prediction per input row, in order
        assert published.column("customer_id").to_pylist() == [row.split(",", 1)[0] for row in input_rows]
        assert manifest["rows_in"] == manifest["rows_out"] == len(input_rows)
        out[folder.name] = {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(folder.iterdir())}
    return out


def check_partitions(root: Path, expected_attempts: int, glue: GlueCatalogs | None = None
                     ) -> dict[str, dict[str, dict[str, str]]]:
    assert sorted(p.name for p in (root / "output/churn").iterdir()) == [f"dt={d}" for d in DATES]
    found = {}
    for ds in DATES:
        found[ds] = attempts(root, ds)
        assert len(found[ds]) == expected_attempts, (ds, list(found[ds]))
        latest = json.loads((root / "output/churn" / f"dt={ds}" / "_LATEST.json").read_text())
        newest = max(found[ds], key=lambda a: (root / "output/churn" / f"dt={ds}" / a / "_SUCCESS").stat().st_mtime)
        assert latest["attempt_prefix"].rstrip("/").endswith(newest)
        manifest = json.loads((root / "output/churn" / f"dt={ds}" / newest / "_manifest.json").read_text())
        assert manifest["ds"] == ds and manifest["rows_out"] == 1000
        # the table's day and the Hive partition name the same attempt: one copy of the day
        if glue is not None:
            assert_pointers_agree(root, "churn", ds, glue.identifier, catalog=glue.properties,
                                  glue=glue.hive_partition())
        else:
            assert_pointers_agree(root, "churn", ds, "scoring.churn")
    return found


def with_tables(folder: Path, glue: GlueCatalogs) -> Path:
    """The configs of ``folder`` publishing to ``glue``'s Iceberg table and Hive table (both Airflow lines)."""
    for config in (folder / "configs").glob("*.yaml"):
        settings = yaml.safe_load(config.read_text())
        settings["publish"] = glue.publish_settings()
        config.write_text(yaml.safe_dump(settings))
    return folder


def assert_first_attempts_unchanged(before, after) -> None:
    for ds in DATES:
        for name, files in before[ds].items():
            assert after[ds][name] == files


@pytest.mark.skipif(AIRFLOW_V3, reason="`airflow dags backfill` is the Airflow 2 command")
def test_airflow2_dags_backfill(pg_database, backfill_root, tmp_path, glue_catalogs):
    # Days cut in Berlin: before the timetable labelled days by midnight UTC, this ran two days, the
    # first of them into dt=2026-05-31. The tables: a Glue catalog (moto) and a Hive table, since Airflow 2.11
    # cannot run the SQL catalog.
    dags = with_tables(dags_folder_in_zone(tmp_path / "dags", "Europe/Berlin"), glue_catalogs)
    env = airflow_env(tmp_path / "home", backfill_root, AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=pg_database.url,
                      AIRFLOW__CORE__EXECUTOR="LocalExecutor", AIRFLOW__CORE__DAGS_FOLDER=str(dags),
                      **glue_catalogs.env())
    airflow(env, "db", "migrate")
    airflow(env, "dags", "backfill", "-s", DATES[0], "-e", DATES[-1], DAG_ID)
    first = check_partitions(backfill_root, expected_attempts=1, glue=glue_catalogs)
    runs = pg_database.query("SELECT execution_date::date::text, state FROM dag_run WHERE dag_id=%s ORDER BY 1",
                             DAG_ID)
    assert runs == [(d, "success") for d in DATES]

    airflow(env, "dags", "backfill", "-s", DATES[0], "-e", DATES[-1], "--reset-dagruns", "-y", DAG_ID)
    second = check_partitions(backfill_root, expected_attempts=2, glue=glue_catalogs)
    assert_first_attempts_unchanged(first, second)


@pytest.mark.skipif(not AIRFLOW_V3, reason="`airflow backfill create` is the Airflow 3 command")
def test_airflow3_backfill_create(pg_database, backfill_root, tmp_path):
    # Days cut in New York: before the timetable labelled days by midnight UTC, June 3 was left out.
    port = free_port()
    env = airflow_env(
        tmp_path / "home", backfill_root,
        AIRFLOW__CORE__DAGS_FOLDER=str(dags_folder_in_zone(tmp_path / "dags", "America/New_York")),
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=pg_database.url,
        AIRFLOW__CORE__EXECUTOR="LocalExecutor",
        AIRFLOW__API__PORT=str(port),
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{port}/execution/",
        AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC="1",
    )
    airflow(env, "db", "migrate")
    airflow(env, "dags", "reserialize")
    airflow(env, "dags", "unpause", DAG_ID)  # Airflow 3 runs no dag run of a paused DAG, backfills included

    def runs_done(count: int) -> bool:
        states = pg_database.query("SELECT state FROM dag_run WHERE dag_id=%s AND run_type='backfill'", DAG_ID)
        open_backfills = pg_database.query("SELECT id FROM backfill WHERE dag_id=%s AND completed_at IS NULL",
                                           DAG_ID)
        return len(states) == 3 and all(s == ("success",) for s in states) and not open_backfills and all(
            len(list((backfill_root / "output/churn" / f"dt={d}").glob("*/_SUCCESS"))) == count for d in DATES
        )

    with AirflowServices(env, tmp_path / "logs", ["api-server", "--port", str(port)], ["scheduler"]) as services:
        wait_for(lambda: api_healthy(port), "the api-server", services, timeout=120)
        airflow(env, "backfill", "create", "--dag-id", DAG_ID, "--from-date", DATES[0], "--to-date", DATES[-1])
        wait_for(lambda: runs_done(1), "three backfill runs", services)
        first = check_partitions(backfill_root, expected_attempts=1)
        logical = pg_database.query(
            "SELECT logical_date::date::text FROM dag_run WHERE dag_id=%s AND run_type='backfill' ORDER BY 1", DAG_ID)
        assert logical == [(d,) for d in DATES]

        airflow(env, "backfill", "create", "--dag-id", DAG_ID, "--from-date", DATES[0], "--to-date", DATES[-1],
                "--reprocess-behavior", "completed")
        wait_for(lambda: runs_done(2), "three re-run backfill runs", services)
    second = check_partitions(backfill_root, expected_attempts=2)
    assert_first_attempts_unchanged(first, second)
