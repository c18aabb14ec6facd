"""A malformed record in one of three shards: two .out objects, a Failed job naming the third shard,
and an operator error in the DAG run that leads back to the input file and the model's message."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from airflow_env import REPO, airflow, airflow_env

pytestmark = pytest.mark.integration
DS = "2026-06-24"


def test_one_bad_shard_of_three(airflow_home, demo_root, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(demo_root / "input", data / "input")
    shutil.copytree(demo_root / "models", data / "models")
    inputs = sorted((data / "input/churn" / f"dt={DS}").glob("*.csv"))
    assert len(inputs) == 3
    victim = inputs[-1]
    lines = victim.read_text().splitlines(keepends=True)
    fields = lines[len(lines) // 2].split(",")
    fields[4] = "twelve"  # tenure_months, in the middle of the last file: the last of three shards
    lines[len(lines) // 2] = ",".join(fields)
    victim.write_text("".join(lines))

    total_mb = sum(p.stat().st_size for p in inputs) / (1024 * 1024)
    folder = tmp_path / "dags"
    (folder / "configs").mkdir(parents=True)
    shutil.copy(REPO / "dags" / "scoring_dags.py", folder)
    config = (REPO / "dags" / "configs" / "churn.yaml").read_text().replace("retries: 2", "retries: 0")
    config = config.replace("target_shard_mb: 64", f"target_shard_mb: {total_mb / 3 * 1.0001:.6f}")
    (folder / "configs" / "churn.yaml").write_text(config)

    env = airflow_env(airflow_home, data, AIRFLOW__CORE__DAGS_FOLDER=str(folder))
    proc = airflow(env, "dags", "test", "churn_nightly_scoring", DS, check=False)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0

    shards = sorted(p.name for p in (data / "work").rglob("shard-*/part-*.csv"))
    outs = sorted(p.name for p in (data / "work").rglob("transform/*/*.out"))
    assert len(shards) == 3, shards
    assert outs == [f"{shards[0]}.out", f"{shards[1]}.out"]  # the two good shards completed

    error = re.search(r"transform job \S+ ended Failed: (.*)", log)
    assert error, log[-3000:]
    message = error.group(1)
    assert re.search(rf"/{shards[2]}: the model failed request \d+ \(records \d+-\d+\) after", message), message
    assert "column 'tenure_months' must be numeric, got 'twelve'" in message
    assert f"{shards[2]} holds records" in message and victim.name in message
    assert not (data / "output").exists()
