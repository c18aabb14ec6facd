"""Prediction checks: a model that returns NaN for 5% of rows, a constant, or scores shifted by 0.3 against
yesterday fails publish naming the check, on the CSV and the Parquet path; a healthy day publishes; the
statistics are in _manifest.json either way."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from engine_helpers import handler_model, inline_handler, transform_request

from airflow_bt.steps.checks import PredictionCheckError, checks_error, evaluate, psi
from airflow_bt.steps.layout import RunLayout
from airflow_bt.steps.publish import publish_attempt
from airflow_bt.steps.shard import shard_partition
from airflow_bt.storage import for_uri
from airflow_bt.transform.local_engine import run_transform_job

ROWS = 2000
#: score(id): healthy is spread over [0.05, 0.65) (mean ~0.35); the faulty models are what their names say.
HANDLER = """
import math, os

def model_fn(model_dir):
    return os.environ["MODE"]

def input_fn(body, content_type):
    return [int(line.split(b",", 1)[0]) for line in body.splitlines()]

def predict_fn(ids, mode):
    healthy = [0.05 + (i * 7919 % 1000) / 1000 * 0.6 for i in ids]
    if mode == "nan5":
        return [math.nan if i % 20 == 0 else p for i, p in zip(ids, healthy)]
    if mode == "constant":
        return [0.35 for _ in ids]
    if mode == "shift":
        return [p + 0.3 for p in healthy]
    return healthy

def output_fn(scores, accept):
    return "".join(f"{p}\\n" for p in scores)
"""
CHECKS: dict[str, Any] = {"min_rows": 100, "columns": {"score": {
    "max_null_fraction": 0.01, "range": [0, 1], "bins": 10, "max_mean_shift": 0.1, "max_psi": 0.25}}}


def write_input(folder: Path, fmt: str) -> Path:
    folder.mkdir(parents=True)
    table = pa.table({"id": pa.array(range(ROWS), pa.int64()), "name": [f"c{i}" for i in range(ROWS)]})
    if fmt == "parquet":
        pq.write_table(table, folder / "part-0.parquet")
    else:
        (folder / "part-0.csv").write_text("id,name\n" + "".join(f"{i},c{i}\n" for i in range(ROWS)))
    return folder


def publish_day(tmp_path: Path, day: str, mode: str, fmt: str, checks: dict[str, Any] | None = CHECKS
                ) -> dict[str, Any]:
    base = tmp_path.as_uri()
    inp = write_input(tmp_path / "in" / day / mode, fmt)
    layout = RunLayout(work_root=f"{base}/work/dt={day}/", output_root=f"{base}/output/dt={day}/", slug=mode)
    store = for_uri(base)
    summary = shard_partition(store, inp.as_uri() + "/", layout.step_prefix("shard", 1),
                              layout.step_file("shard", 1, ".manifest"), layout.step_file("shard", 1, ".json"),
                              min_shards=2)
    out = layout.step_prefix("transform", 1)
    model = handler_model(inline_handler(tmp_path, "scores", HANDLER), MODE=mode)
    description = run_transform_job(transform_request(summary["manifest_uri"], out, S3DataType="ManifestFile",
                                                      ContentType=summary["content_type"]), model)
    assert description["TransformJobStatus"] == "Completed", description.get("FailureReason")
    return publish_attempt(store, summary, out, layout.attempt_prefix(1), layout.latest_uri,
                           prediction_columns=["score"], output_format=fmt, checks=checks)


def attempt_of(tmp_path: Path, day: str, mode: str) -> Path:
    return tmp_path / "output" / f"dt={day}" / f"{mode}-1"


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
@pytest.mark.parametrize(("mode", "setting", "statistic"), [
    ("nan5", "postprocess.checks.columns.score.max_null_fraction", "null fraction 0.05"),
    ("constant", "postprocess.checks.columns.score.max_psi", "PSI against the last published day"),
    ("shift", "postprocess.checks.columns.score.max_mean_shift", "mean shift against the last published day 0.3"),
])
def test_a_faulty_model_fails_publish_naming_the_check(tmp_path: Path, fmt: str, mode: str, setting: str,
                                                       statistic: str) -> None:
    yesterday = publish_day(tmp_path, "2026-06-23", "healthy", fmt)
    assert all(r["passed"] for r in yesterday["checks"]["results"])
    with pytest.raises(PredictionCheckError) as info:
        publish_day(tmp_path, "2026-06-24", mode, fmt)
    message = str(info.value)
    assert setting in message and statistic in message and "nothing was published" in message
    attempt = attempt_of(tmp_path, "2026-06-24", mode)
    assert not (attempt / "_SUCCESS").exists()
    assert not (tmp_path / "output/dt=2026-06-24/_LATEST.json").exists()  # the pointer did not move
    manifest = json.loads((attempt / "_manifest.json").read_text())  # what went wrong, to read
    assert manifest["checks"]["compared_with"] == "2026-06-23"
    assert next(r["setting"] for r in manifest["checks"]["results"] if not r["passed"]) == setting
    # a healthy model the same day publishes
    healthy = publish_day(tmp_path, "2026-06-24", "healthy", fmt)
    assert (attempt_of(tmp_path, "2026-06-24", "healthy") / "_SUCCESS").exists()
    assert healthy["statistics"]["columns"]["score"]["count"] == ROWS


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_statistics_are_recorded_without_checks_and_warn_publishes(tmp_path: Path, fmt: str) -> None:
    manifest = publish_day(tmp_path, "2026-06-24", "nan5", fmt, checks=None)
    score = manifest["statistics"]["columns"]["score"]
    assert score["count"] == ROWS and score["nulls"] == ROWS // 20 and score["null_fraction"] == 0.05
    assert 0.05 <= score["min"] < 0.06 and 0.64 <= score["max"] < 0.65 and abs(score["mean"] - 0.35) < 0.01
    assert "histogram" not in score  # no range, no fixed bins
    warned = publish_day(tmp_path / "warn", "2026-06-24", "nan5", fmt,
                         checks={**CHECKS, "on_check_failure": "warn"})
    assert (attempt_of(tmp_path / "warn", "2026-06-24", "nan5") / "_SUCCESS").exists()
    failed = [r for r in warned["checks"]["results"] if not r["passed"]]
    assert [r["statistic"] for r in failed] == ["null fraction"]
    hist = warned["statistics"]["columns"]["score"]["histogram"]
    assert sum(hist["counts"]) == ROWS - ROWS // 20 and len(hist["counts"]) == 12  # below, 10 bins, above
    assert 0.3 < warned["statistics"]["columns"]["score"]["quantiles"]["p50"] < 0.4


def test_row_counts_and_allowed_values():
    stats = {"rows": 5, "columns": {"label": {"count": 5, "nulls": 0, "null_fraction": 0.0, "min": 0.0, "max": 2.0,
                                              "mean": 0.8, "values": {"0": 2, "1": 2, "2": 1}}}}
    checks = {"min_rows": 10, "max_rows": 100, "columns": {"label": {"allowed_values": [0, 1]}}}
    results = {r.setting: r for r in evaluate(checks, stats, None)}
    assert not results["postprocess.checks.min_rows"].passed and results["postprocess.checks.max_rows"].passed
    outside = results["postprocess.checks.columns.label.allowed_values"]
    assert not outside.passed and outside.value == ["2"]


def test_psi_is_zero_for_the_same_histogram_and_grows_with_the_shift():
    same = [10, 20, 40, 20, 10]
    assert psi(same, same) == 0
    assert 0 < psi(same, [12, 22, 36, 20, 10]) < psi(same, [40, 30, 20, 5, 5])


@pytest.mark.parametrize(("checks", "message"), [
    ({"columns": {"p": {"max_psi": 0.2}}}, "max_psi needs a range"),
    ({"columns": {"q": {}}}, "'q' is not one of prediction_columns"),
    ({"columns": {"p": {"range": [1, 0]}}}, "range: expected \\[min, max\\] with min < max"),
    ({"on_check_failure": "page"}, "on_check_failure must be fail or warn"),
    ({"columns": {"p": {"max_null_fraction": 2}}}, "a fraction is at most 1"),
    ({"max_rowz": 3}, "unknown setting"),
])
def test_bad_check_settings_are_named(checks, message):
    import re

    error = checks_error(checks, ["p"])
    assert error is not None and re.search(message, error), error


def test_an_unreadable_earlier_day_is_no_baseline_and_the_one_before_it_is(tmp_path: Path) -> None:
    publish_day(tmp_path, "2026-06-22", "healthy", "csv")
    publish_day(tmp_path, "2026-06-23", "healthy", "csv")
    pointer = tmp_path / "output/dt=2026-06-23/_LATEST.json"
    pointer.unlink()
    pointer.write_text("{not json")  # e.g. written by hand
    manifest = publish_day(tmp_path, "2026-06-24", "healthy", "csv")
    assert manifest["checks"]["compared_with"] == "2026-06-22"


def test_json_lines_statistics_read_the_lines_as_the_join_does():
    """A line that is not JSON is published as text by the JSON Lines join; the statistics count it, not crash."""
    from airflow_bt.steps.checks import PredictionStats

    stats = PredictionStats(["p"])
    stats.add_lines([b'{"p": 0.5}', b'{"p": null}', b"not json"], "jsonl")
    described = stats.describe(3)["columns"]["p"]
    assert described["count"] == 3 and described["nulls"] == 1
