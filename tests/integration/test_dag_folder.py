"""Parsing the DAG folder is light and clean."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from airflow_env import REPO, airflow, airflow_env, json_from_output

pytestmark = pytest.mark.integration

HEAVY = ("boto3", "botocore", "pandas", "numpy", "sklearn", "pyarrow", "airflow_bt.transform.local_engine")

PROBE = """
import json, runpy, sys, time
# Airflow's own DAG and operator classes are loaded before the DAG file, as in the DAG processor
from airflow_bt.compat import DAG, BaseOperator, BaseSensorOperator
t = time.perf_counter()
dags = runpy.run_path(sys.argv[1])
print(json.dumps({"seconds": time.perf_counter() - t,
                  "dags": sorted(k for k, v in dags.items() if type(v).__name__ == "DAG"),
                  "heavy": sorted(m for m in HEAVY if m in sys.modules)}))
""".replace("HEAVY", repr(HEAVY))


def test_parsing_imports_no_heavy_module(tmp_path):
    env = airflow_env(tmp_path)
    proc = subprocess.run([sys.executable, "-c", PROBE, str(REPO / "dags" / "scoring_dags.py")], env=env,
                          capture_output=True, text=True, timeout=120, check=True)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["dags"] == ["churn_nightly_scoring", "churn_parquet_nightly_scoring"]
    assert result["heavy"] == []
    assert result["seconds"] < 1.0


def test_airflow_dags_list_shows_the_dag_without_import_errors(airflow_home, demo_root):
    from airflow_bt.compat import AIRFLOW_V3

    env = airflow_env(airflow_home, demo_root)
    local = ["--local"] if AIRFLOW_V3 else []  # Airflow 2 always parses the folder itself
    listed = json_from_output(airflow(env, "dags", "list", *local, "-o", "json").stdout)
    assert sorted(d["dag_id"] for d in listed) == [  # type: ignore[index]
        "churn_nightly_scoring", "churn_parquet_nightly_scoring"]
    errors = json_from_output(airflow(env, "dags", "list-import-errors", *local, "-o", "json").stdout)
    assert errors == []
