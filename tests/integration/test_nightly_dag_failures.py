"""A bad record fails the nightly DAG with an error that leads to the input file, publishing nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from airflow_env import REPO, airflow, airflow_env
from data_helpers import corrupt_tenure

pytestmark = pytest.mark.integration
DS = "2026-06-24"


def dag_folder_without_retries(tmp_path: Path) -> Path:
    folder = tmp_path / "dags"
    (folder / "configs").mkdir(parents=True)
    shutil.copy(REPO / "dags" / "scoring_dags.py", folder)
    config = (REPO / "dags" / "configs" / "churn.yaml").read_text()
    (folder / "configs" / "churn.yaml").write_text(config.replace("retries: 2", "retries: 0"))
    return folder


def test_malformed_record_fails_the_run_naming_the_input_and_publishes_nothing(airflow_home, demo_root, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(demo_root / "input", data / "input")
    shutil.copytree(demo_root / "models", data / "models")
    victim = data / "input/churn" / f"dt={DS}" / "customers-0003.csv"
    corrupt_tenure(victim)

    env = airflow_env(airflow_home, data, AIRFLOW__CORE__DAGS_FOLDER=str(dag_folder_without_retries(tmp_path)))
    proc = airflow(env, "dags", "test", "churn_nightly_scoring", DS, check=False)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "ended Failed" in log
    assert "column 'tenure_months' must be numeric, got 'twelve'" in log
    assert "customers-0003.csv" in log  # the error leads back to the input file
    assert not (data / "output").exists()  # nothing published, no _LATEST.json
