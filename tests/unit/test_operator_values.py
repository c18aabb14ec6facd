"""What the steps hand each other, and how they read their rendered settings: typed, checked, named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from airflow_bt.compat import AirflowFailException
from airflow_bt.operators.results import ShardOutput, TransformResult
from airflow_bt.operators.shard import ShardInputOperator
from airflow_bt.operators.templated import as_bool, as_int, as_number, required_int
from airflow_bt.transform.status import TransformJobStatus, next_poll_delay


@given(st.integers(min_value=0, max_value=10**12))
def test_a_rendered_whole_number_reads_back_as_itself(n: int) -> None:
    for rendered in (n, str(n), f" {n} ", float(n), f"{n}.0"):
        assert as_int("instance_count", rendered) == n


@pytest.mark.parametrize(("value", "message"), [
    ("many", "min_shards must be a number, got 'many'"),
    ("2.5", "min_shards must be a whole number, got '2.5'"),
    ("0", "min_shards must be at least 1, got '0'"),
    ("nan", "min_shards must be a number"),
    (True, "min_shards must be a number"),
])
def test_a_bad_rendered_number_fails_naming_the_setting_and_the_value(value: Any, message: str) -> None:
    with pytest.raises(AirflowFailException, match=message):
        required_int("min_shards", value, minimum=1)


def test_unset_numbers_stay_unset_and_flags_read_their_spellings() -> None:
    assert as_number("price_per_instance_hour", "") is None and as_int("max_record_bytes", None) is None
    assert [as_bool("f", v) for v in (True, "True", "yes", "1", "on")] == [True] * 5
    assert [as_bool("f", v) for v in (False, "false", "No", "0", "", "None")] == [False] * 6
    with pytest.raises(AirflowFailException, match="create_model must be true or false, got 'maybe'"):
        as_bool("create_model", "maybe")


def test_the_shard_operator_fails_a_bad_rendered_number_without_a_retry(tmp_path: Path) -> None:
    """Before, ``int("many")`` raised ValueError, which Airflow retries: the same bad value, every retry."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.csv").write_text("id\n1\n")
    op = ShardInputOperator(task_id="shard", input_uri=(tmp_path / "in").as_uri() + "/",
                            work_uri=(tmp_path / "work").as_uri() + "/", min_shards="many", aws_conn_id=None)
    with pytest.raises(AirflowFailException, match="min_shards must be a number, got 'many'"):
        op.execute({"ti": type("TI", (), {"try_number": 1})(), "run_id": "manual__2026-06-24T00:00:00+00:00"})
    assert not (tmp_path / "work").exists()  # nothing was written


def test_results_round_trip_through_xcom_and_a_foreign_value_is_named() -> None:
    result = TransformResult(status="InProgress", backend="sagemaker", output_uri="s3://b/w/transform/j-r2/",
                             prediction_prefixes=["s3://b/w/transform/j-r2/", "s3://b/w/transform/j/"], records=5,
                             shards_summary_uri="s3://b/w/shard-1.json", job_name="j-r2", reused_shards=1)
    assert TransformResult.from_xcom(result.to_xcom()) == result
    assert TransformResult.from_xcom({**result.to_xcom(), "added_later": 1}) == result  # newer keys are ignored
    with pytest.raises(AirflowFailException, match="`transform` must be the transform task's return value"):
        TransformResult.from_xcom({"job_name": "j", "output_uri": "s3://b/o/"})  # the old shape: no prefixes
    shards = ShardOutput(run_slug="r", work_uri="s3://b/w/", summary_uri="s3://b/w/r/shard-1.json", shards=3)
    assert ShardOutput.from_xcom(shards.to_xcom()) == shards
    with pytest.raises(AirflowFailException, match="`shards` must be the shards task's return value"):
        ShardOutput.from_xcom("s3://b/w/")


def test_stopped_is_a_failure_and_only_completed_succeeds() -> None:
    assert [s.value for s in TransformJobStatus if s.terminal] == ["Completed", "Failed", "Stopped"]
    assert [s.value for s in TransformJobStatus if s.failure] == ["Failed", "Stopped"]
    with pytest.raises(ValueError):
        TransformJobStatus.of({"TransformJobStatus": "Deleted"})


@given(st.floats(min_value=0.01, max_value=600), st.floats(min_value=-100, max_value=1000))
def test_a_poll_never_sleeps_past_the_deadline(interval: float, left: float) -> None:
    now = 1_000_000.0
    deadline = now + left  # as a monotonic clock reading: ``deadline - now`` is ``left`` to within a rounding
    delay = next_poll_delay(interval, deadline, now=now)
    assert 0.0 <= delay <= interval and delay <= max(0.0, deadline - now)
    assert next_poll_delay(interval, None, now=now) == interval
