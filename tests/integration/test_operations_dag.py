"""Operations settings in a real DAG run: a failing prediction check stops publish, retention cleans scratch."""

from __future__ import annotations

import json
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
    assert (attempt / "_SUCCESS").exists() and list(attempt.glob("part-*.csv"))
