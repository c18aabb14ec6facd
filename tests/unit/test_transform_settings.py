"""The request settings of the transform step have their effect on the local engine, through the operator."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from engine_helpers import inline_handler

from airflow_bt.compat import AirflowException, AirflowFailException
from airflow_bt.operators.transform import BatchTransformOperator
from airflow_bt.steps.layout import RunLayout
from airflow_bt.steps.shard import shard_partition
from airflow_bt.storage import for_uri

# Predicts "<fields the model saw>,<first field>" per row; with FAIL_FIRST_DIR, the first attempt of every
# request fails (a transient fault that a retry heals).
HANDLER = """
import os, uuid

def model_fn(model_dir):
    return None

def input_fn(body, content_type):
    return body.decode().splitlines()

def predict_fn(rows, model):
    folder = os.environ.get("FAIL_FIRST_DIR")
    if folder:
        marker = os.path.join(folder, str(abs(hash(tuple(rows)))))
        if not os.path.exists(marker):
            open(marker, "w").close()
            raise RuntimeError("transient: try again")
    return [f"{len(r.split(','))},{r.split(',')[0]}" for r in rows]

def output_fn(predictions, accept):
    return "".join(p + "\\n" for p in predictions)
"""


@pytest.fixture
def run(tmp_path: Path) -> dict[str, Any]:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.csv").write_text("id,x,y\n" + "".join(f"{i},{i * 2},{i * 3}\n" for i in range(1, 7)))
    base = tmp_path.as_uri()
    layout = RunLayout(work_root=f"{base}/work/", output_root=f"{base}/out/", slug="run-a")
    summary = shard_partition(for_uri(base), f"{base}/in/", layout.step_prefix("shard", 1),
                              layout.step_file("shard", 1, ".manifest"), layout.step_file("shard", 1, ".json"))
    return {"tmp": tmp_path, "model": inline_handler(tmp_path, "fields", HANDLER),
            "shards": {"summary_uri": summary["summary_uri"], "work_uri": f"{base}/work/", "run_slug": "run-a"}}


def predictions(run: dict[str, Any], **settings: Any) -> list[str]:
    ti = type("TI", (), {"try_number": 1, "xcom_push": lambda *a, **k: None})()
    settings = {"model_data_url": run["model"], **settings}
    op = BatchTransformOperator(task_id="transform", shards=run["shards"], model_name="fields", image="local/handler",
                                backend="local", batch_strategy="SingleRecord", aws_conn_id=None, **settings)
    result = op.execute({"ti": ti, "ds": "2026-06-24"})  # type: ignore[arg-type]
    out = Path(result["output_uri"].removeprefix("file://"))
    return [line for path in sorted(out.glob("*.out")) for line in path.read_text().splitlines()]


def test_without_filters_the_model_sees_every_column(run):
    assert predictions(run) == [f"3,{i}" for i in range(1, 7)]


def test_the_input_filter_keeps_the_id_column_from_the_model(run):
    assert predictions(run, input_filter="$[1:]") == [f"2,{i * 2}" for i in range(1, 7)]


def test_the_output_filter_keeps_part_of_each_prediction(run):
    assert predictions(run, input_filter="$[1:]", output_filter="$[0]") == ["2"] * 6


def test_model_client_config_sets_the_retries_of_a_request(run):
    (run["tmp"] / "faults-a").mkdir()
    with pytest.raises(AirflowException, match="transient: try again"):
        predictions(run, model_client_config={"max_retries": 0},
                    model_environment={"FAIL_FIRST_DIR": str(run["tmp"] / "faults-a")})
    (run["tmp"] / "faults-b").mkdir()
    assert predictions(run, model_client_config={"max_retries": 1},
                       model_environment={"FAIL_FIRST_DIR": str(run["tmp"] / "faults-b")}) == [
        f"3,{i}" for i in range(1, 7)]


def test_data_capture_records_what_the_job_read_and_wrote(run):
    capture = (run["tmp"] / "capture").as_uri()
    assert predictions(run, data_capture={"destination_s3_uri": capture}) == [f"3,{i}" for i in range(1, 7)]
    manifests = {p.parts[-6]: p for p in (run["tmp"] / "capture").rglob("*.json")}
    assert sorted(manifests) == ["input", "output"]
    for kind, path in manifests.items():
        assert re.fullmatch(r"\d{4}/\d{2}/\d{2}/\d{2}/bt-fields-20260624-[a-z0-9-]+\.json",
                            "/".join(path.parts[-5:])), path
        prefix, *keys = json.loads(path.read_text())
        objects = [Path(prefix["prefix"].removeprefix("file://") + key) for key in keys]
        assert objects and all(p.exists() for p in objects)
        assert all(p.suffix == (".out" if kind == "output" else ".csv") for p in objects)


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """moto's SageMaker, where a model package can be registered (the AWS connection finds it there)."""
    import boto3
    from moto import mock_aws

    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                        ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch.setenv(name, value)
    with mock_aws():
        yield boto3.client("sagemaker", region_name="us-east-1")


def test_a_model_package_runs_the_container_and_artifact_it_names(run, registry):
    arn = registry.create_model_package(
        ModelPackageName="fields", InferenceSpecification={
            "Containers": [{"Image": "local/handler", "ModelDataUrl": run["model"]}],
            "SupportedContentTypes": ["text/csv"], "SupportedResponseMIMETypes": ["text/csv"]})["ModelPackageArn"]
    assert predictions(run, model_package_name=arn, model_data_url=None, input_filter="$[1:]") == [
        f"2,{i * 2}" for i in range(1, 7)]
    with pytest.raises(AirflowFailException, match=r"PrimaryContainer\.ModelPackageName: model package 'missing'"):
        predictions(run, model_package_name="missing", model_data_url=None)
