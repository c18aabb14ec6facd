"""Two runs of the same date at once cannot corrupt each other or ``_LATEST.json``."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from airflow_env import BIN, airflow, airflow_env

pytestmark = pytest.mark.integration
DS = "2026-06-23"


def test_two_runs_of_one_date_at_once_publish_two_complete_attempts(demo_root, tmp_path):
    homes = [tmp_path / "home-a", tmp_path / "home-b"]
    envs = [airflow_env(home, demo_root) for home in homes]
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
        rows = sum(len(part.read_text().splitlines()) - 1 for part in attempt.glob("part-*.csv"))
        assert rows == manifest["rows_out"] == manifest["rows_in"] == 3000
    latest = json.loads((date_root / "_LATEST.json").read_text())
    assert Path(latest["attempt_prefix"].removeprefix("file://").rstrip("/")) in attempts
