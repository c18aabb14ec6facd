"""Two runs of the same date at once cannot corrupt each other or ``_LATEST.json``."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from airflow_env import BIN, airflow, airflow_env
from data_helpers import dag_folder
from table_checks import assert_pointers_agree, read_parts

from airflow_bt.tables.catalog import catalog_unavailable

pytestmark = pytest.mark.integration
DS = "2026-06-23"


def test_two_runs_of_one_date_at_once_publish_two_complete_attempts(demo_root, tmp_path, glue_catalogs):
    """... and leave the table's day, the Hive partition and _LATEST.json at one of them, the same one: on
    Airflow 3 the SQLite catalog takes two processes' commits; on 2.11 (no SQL catalog) a Glue one does."""
    homes = [tmp_path / "home-a", tmp_path / "home-b"]
    sql = catalog_unavailable({"type": "sql"}) is None
    settings = glue_catalogs.env()
    if sql:  # the default catalog (SQLite under the data root); the connection still reaches Glue
        settings.pop("AIRFLOW_BT_CATALOG")
    folder = dag_folder(tmp_path, publish=glue_catalogs.publish_settings())
    envs = [airflow_env(home, demo_root, AIRFLOW__CORE__DAGS_FOLDER=str(folder), **settings) for home in homes]
    for env in envs:
        airflow(env, "db", "migrate")
    runs = [subprocess.Popen([str(BIN / "airflow"), "dags", "test", "churn_nightly_scoring", DS], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for env in envs]
    outputs = [proc.communicate(timeout=600)[0] for proc in runs]
    assert [proc.returncode for proc in runs] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]

    date_root = demo_root / "output/churn" / f"dt={DS}"
    attempts = sorted(p.parent for p in date_root.glob("*/_SUCCESS"))
    assert len(attempts) == 2
    for attempt in attempts:
        manifest = json.loads((attempt / "_manifest.json").read_text())
        rows = read_parts(attempt).num_rows
        assert rows == manifest["rows_out"] == manifest["rows_in"] == 3000
    latest = json.loads((date_root / "_LATEST.json").read_text())
    assert Path(latest["attempt_prefix"].removeprefix("file://").rstrip("/")) in attempts
    state = assert_pointers_agree(demo_root, "churn", DS, glue_catalogs.identifier, glue=glue_catalogs.hive_partition(),
                                  catalog=None if sql else glue_catalogs.properties)
    assert state is not None and state["rows"] == 3000  # one copy of the day
