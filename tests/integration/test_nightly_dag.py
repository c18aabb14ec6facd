"""The nightly churn DAG, run by `airflow dags test` on the embedded default, end to end."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import importlib.util
import io
import json
import tarfile
from pathlib import Path

import pytest
from airflow_env import airflow, airflow_env
from table_checks import assert_pointers_agree, assert_rows_are_the_inputs, read_parts

pytestmark = pytest.mark.integration
DS = "2026-06-24"


def input_rows(root: Path) -> tuple[list[str], list[list[str]]]:
    header: list[str] = []
    rows: list[list[str]] = []
    for path in sorted((root / "input/churn" / f"dt={DS}").glob("*.csv")):
        with path.open(newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader)
            rows.extend(reader)
    return header, rows


def expected_probabilities(root: Path, rows: list[list[str]], tmp_path: Path) -> list[str]:
    """What the model's own handler says for each row, computed directly."""
    model_dir = tmp_path / "model"
    with tarfile.open(root / "models/churn/model.tar.gz") as tar:
        tar.extractall(model_dir, filter="data")
    spec = importlib.util.spec_from_file_location("expected_handler", model_dir / "code/inference.py")
    handler = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(handler)  # type: ignore[union-attr]
    model = handler.model_fn(str(model_dir))
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    body = handler.output_fn(handler.predict_fn(handler.input_fn(buf.getvalue().encode(), "text/csv"), model),
                             "text/csv")
    return (body.decode() if isinstance(body, bytes) else body).splitlines()


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def run_dag(airflow_home: Path, demo_root: Path) -> None:
    proc = airflow(airflow_env(airflow_home, demo_root), "dags", "test", "churn_nightly_scoring", DS)
    assert "state=failed" not in proc.stdout + proc.stderr


def test_dag_publishes_one_prediction_per_input_row_and_reruns_add_attempts(airflow_home, demo_root, tmp_path):
    run_dag(airflow_home, demo_root)
    out = demo_root / "output/churn" / f"dt={DS}"
    latest = json.loads((out / "_LATEST.json").read_text())
    first = Path(latest["attempt_prefix"].removeprefix("file://"))
    assert (first / "_SUCCESS").exists()
    manifest = json.loads((first / "_manifest.json").read_text())

    in_header, in_rows = input_rows(demo_root)
    published = assert_rows_are_the_inputs(demo_root, "churn", DS, first)  # every input row, in order, unchanged
    assert published.column_names == [*in_header, "churn_probability", "scored_date"]
    assert sorted(p.name for p in first.glob("part-*")) == ["part-00000.parquet"]  # typed Parquet, as configured
    assert published.num_rows == len(in_rows) == manifest["rows_in"] == manifest["rows_out"] == 3000
    expected = [float(p) for p in expected_probabilities(demo_root, in_rows, tmp_path)]
    assert published.column("churn_probability").to_pylist() == expected
    assert set(published.column("scored_date").to_pylist()) == {dt.date(2026, 6, 24)}
    assert manifest["run_id"] and manifest["job_name"].startswith("bt-churn-20260624-")
    assert manifest["transform"]["instance_count"] == 1  # dags/configs/churn.yaml
    first_state = assert_pointers_agree(demo_root, "churn", DS, "scoring.churn")

    before = snapshot(first)
    run_dag(airflow_home, demo_root)
    second = Path(json.loads((out / "_LATEST.json").read_text())["attempt_prefix"].removeprefix("file://"))
    assert second != first and (second / "_SUCCESS").exists()
    assert snapshot(first) == before  # byte for byte, and not even touched
    assert read_parts(second).equals(published)
    state = assert_pointers_agree(demo_root, "churn", DS, "scoring.churn")  # one copy of the day: the second
    if state is None:  # Airflow 2.11: the SQL catalog cannot run there, and publish says so
        assert first_state is None
        return
    from pyiceberg.expressions import EqualTo

    from airflow_bt.tables.catalog import default_catalog, load_catalog

    table = load_catalog(default_catalog(demo_root.as_uri()) or {}).load_table("scoring.churn")
    day = EqualTo("scored_date", DS)
    assert table.scan(row_filter=day).to_arrow().num_rows == 3000
    parent = table.current_snapshot().parent_snapshot_id
    assert parent == first_state["snapshot_id"]  # the previous snapshot reads the first attempt
    assert table.scan(row_filter=day, snapshot_id=parent).plan_files()[0].file.file_path.startswith(
        f"file://{first}/")


def test_dags_test_off_utc_scores_the_local_day_it_names(tmp_path):
    """`airflow dags test DAG 2026-06-24` with days cut in Tokyo reads and writes dt=2026-06-24, as the
    scheduled run of that day does (tests/unit/test_timetable*.py pin the agreement in every zone)."""
    from airflow_env import dags_folder_in_zone

    from airflow_bt.demo.data import generate_range
    from airflow_bt.demo.model import train_model

    root = tmp_path / "data"
    generate_range(str(root), "churn", DS, DS, rows=200, files=1)
    train_model(str(root / "models" / "churn"), rows=1000)
    env = airflow_env(tmp_path / "home", root,
                      AIRFLOW__CORE__DAGS_FOLDER=str(dags_folder_in_zone(tmp_path / "dags", "Asia/Tokyo")))
    airflow(env, "db", "migrate")
    proc = airflow(env, "dags", "test", "churn_nightly_scoring", DS)
    assert "state=failed" not in proc.stdout + proc.stderr
    assert sorted(p.name for p in (root / "output/churn").iterdir()) == [f"dt={DS}"]
    latest = json.loads((root / "output/churn" / f"dt={DS}" / "_LATEST.json").read_text())
    manifest = json.loads(Path(latest["manifest"].removeprefix("file://")).read_text())
    assert manifest["ds"] == DS and manifest["rows_out"] == 200
    assert manifest["job_name"].startswith("bt-churn-20260624-")
