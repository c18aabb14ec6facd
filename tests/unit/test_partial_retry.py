"""A transform retry re-processes only the shards no earlier try finished; publish reconciles the union."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from engine_helpers import FLAKY_ROW_13_HANDLER, inline_handler

from airflow_bt.compat import AirflowException
from airflow_bt.operators.transform import BatchTransformOperator
from airflow_bt.steps.layout import RunLayout
from airflow_bt.steps.publish import publish_attempt
from airflow_bt.steps.shard import shard_partition
from airflow_bt.storage import for_uri


class FakeTI:
    def __init__(self, try_number: int) -> None:
        self.try_number = try_number

    def xcom_push(self, key: str, value: Any) -> None:  # pragma: no cover - the local backend pushes nothing
        pass


@pytest.fixture
def run(tmp_path: Path) -> dict[str, Any]:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.csv").write_text("id,x\n" + "".join(f"{i},{i * 2}\n" for i in range(1, 31)))
    base = tmp_path.as_uri()
    layout = RunLayout(work_root=f"{base}/work/", output_root=f"{base}/out/", slug="run-a")
    store = for_uri(base)
    summary = shard_partition(store, f"{base}/in/", layout.step_prefix("shard", 1),
                              layout.step_file("shard", 1, ".manifest"), layout.step_file("shard", 1, ".json"),
                              min_shards=3)
    assert len(summary["shards"]) == 3
    return {"store": store, "layout": layout, "summary": summary, "marker": tmp_path / "healed",
            "model": inline_handler(tmp_path, "flaky", FLAKY_ROW_13_HANDLER),
            "shards": {"summary_uri": summary["summary_uri"], "work_uri": f"{base}/work/", "run_slug": "run-a"}}


def transform(run: dict[str, Any], try_number: int, settings: dict[str, Any] | None = None, **env: str
              ) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"instance_count": "1", "max_payload_mb": "1", "batch_strategy": "SingleRecord",
                              **(settings or {})}
    op = BatchTransformOperator(task_id="transform", shards=run["shards"], model_name="test-model",
                                model_data_url=run["model"], image="local/handler", backend="local",
                                model_environment={"HEAL_MARKER": str(run["marker"]), **env}, **kwargs)
    return op.execute({"ti": FakeTI(try_number), "ds": "2026-06-24"})  # type: ignore[arg-type]


BASE = "bt-test-model-20260624-a"  # the run's job (slug run-a); a try that starts over adds -r<try>


def job_prefix(run: dict[str, Any], try_number: int) -> str:
    return f"{run['layout'].run_prefix}transform/{BASE if try_number == 1 else f'{BASE}-r{try_number}'}/"


def outputs(run: dict[str, Any], try_number: int) -> list[str]:
    return sorted(obj.key for obj in run["store"].list(job_prefix(run, try_number)))


def test_a_retry_scores_only_the_shards_the_failed_try_left_without_predictions(run):
    with pytest.raises(AirflowException, match=r"ended Failed: .*part-00001\.csv.*row 13 cannot be scored yet"):
        transform(run, 1)
    assert outputs(run, 1) == ["part-00000.csv.out", "part-00002.csv.out"]  # the failed shard has none
    run["marker"].touch()
    result = transform(run, 2)
    assert outputs(run, 2) == ["part-00001.csv.out"]  # only the missing shard was scored
    assert result["reused_shards"] == 2
    assert result["prediction_prefixes"] == [job_prefix(run, 2), job_prefix(run, 1)]
    manifest = json.loads(run["store"].read_bytes(job_prefix(run, 2).rstrip("/") + ".manifest"))
    assert manifest[1:] == ["part-00001.csv"]

    published = publish_attempt(run["store"], run["summary"], result["prediction_prefixes"],
                                run["layout"].attempt_prefix(1), run["layout"].latest_uri, prediction_columns=["p"])
    rows = [line for part in published["parts"]
            for line in run["store"].read_bytes(part["uri"]).decode().splitlines()[1:]]
    assert rows == [f"{i},{i * 2},{i}" for i in range(1, 31)]  # the union: every row once, in order

    again = transform(run, 3)  # e.g. the task was cleared after publishing failed
    assert again["status"] == "Completed" and again["job_name"] == f"{BASE}-r2"  # try 2's job: nothing scored again
    assert outputs(run, 3) == [] and again["prediction_prefixes"] == result["prediction_prefixes"]


def test_a_retry_with_another_model_scores_everything_again(run):
    with pytest.raises(AirflowException):
        transform(run, 1)
    run["marker"].touch()
    result = transform(run, 2, MODEL_VERSION="2")  # the model's config changed between the tries
    assert result["reused_shards"] == 0
    assert outputs(run, 2) == ["part-00000.csv.out", "part-00001.csv.out", "part-00002.csv.out"]


def test_an_earlier_output_with_the_wrong_count_is_not_reused(run):
    with pytest.raises(AirflowException):
        transform(run, 1)
    first = run["summary"]["shards"][0]
    path = Path(job_prefix(run, 1).removeprefix("file://")) / "part-00000.csv.out"
    path.unlink()
    path.write_text("1\n" * (first["records"] - 1))  # one prediction short
    run["marker"].touch()
    result = transform(run, 2)
    assert result["reused_shards"] == 1
    assert outputs(run, 2) == ["part-00000.csv.out", "part-00001.csv.out"]


def test_a_model_artifact_replaced_at_the_same_url_is_another_model(run):
    with pytest.raises(AirflowException):
        transform(run, 1)
    run["marker"].touch()
    artifact = Path(run["model"].removeprefix("file://"))
    data = artifact.read_bytes()
    artifact.unlink()
    artifact.write_bytes(data + b"\0" * 1024)  # a new upload: another size and mtime, same URL
    result = transform(run, 2)
    assert result["reused_shards"] == 0


@pytest.mark.parametrize("change", [{"environment": {"THRESHOLD": "0.7"}}, {"accept": "application/jsonlines"},
                                    {"batch_strategy": "MultiRecord"}],
                         ids=["job-environment", "accept", "batch-strategy"])
def test_a_retry_with_other_job_settings_scores_everything_again(run, change):
    """The job's Environment, Accept and batching change predictions as much as the model does: one
    fingerprint (airflow_bt.transform.fingerprint) covers them, for the SageMaker backend too."""
    with pytest.raises(AirflowException):
        transform(run, 1)
    run["marker"].touch()
    result = transform(run, 2, settings=change)
    assert result["reused_shards"] == 0
    assert outputs(run, 2) == ["part-00000.csv.out", "part-00001.csv.out", "part-00002.csv.out"]
