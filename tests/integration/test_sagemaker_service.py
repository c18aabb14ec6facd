"""`airflow-bt local-sagemaker` seen through plain boto3, over a moto S3 server: real HTTP, real jobs."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError
from sagemaker_stack import SLOW_HANDLER, fresh_bucket, model_tarball, rowsum_tarball, wait_for

pytestmark = pytest.mark.integration

def job_request(name: str, model: str, bucket: str, *, instances: int = 1, **extra: Any) -> dict[str, Any]:
    return {
        "TransformJobName": name,
        "ModelName": model,
        "TransformInput": {"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{bucket}/in/"}},
                           "ContentType": "text/csv", "SplitType": "Line"},
        "TransformOutput": {"S3OutputPath": f"s3://{bucket}/out/", "Accept": "text/csv", "AssembleWith": "Line"},
        "TransformResources": {"InstanceType": "ml.m5.large", "InstanceCount": instances},
        **extra,
    }


def status_history(sm: Any, name: str, timeout: float = 60) -> tuple[list[str], dict[str, Any]]:
    """Every status DescribeTransformJob showed, until a terminal one."""
    seen: list[str] = []

    def terminal() -> dict[str, Any] | None:
        described = sm.describe_transform_job(TransformJobName=name)
        if not seen or seen[-1] != described["TransformJobStatus"]:
            seen.append(described["TransformJobStatus"])
        return None if described["TransformJobStatus"] in ("InProgress", "Stopping") else described

    return seen, wait_for(terminal, timeout=timeout, interval=0.05, what=f"job {name} to end")


def error_of(call: Any, **kwargs: Any) -> dict[str, str]:
    with pytest.raises(ClientError) as info:
        call(**kwargs)
    return dict(info.value.response["Error"])


def test_boto3_runs_a_model_and_transform_job_over_moto_s3(sagemaker_stack):
    stack = sagemaker_stack
    s3, bucket = fresh_bucket(stack)
    s3.put_object(Bucket=bucket, Key="models/rowsum/model.tar.gz", Body=rowsum_tarball())
    s3.put_object(Bucket=bucket, Key="in/a.csv", Body=b"1,2\n3,4\n")
    s3.put_object(Bucket=bucket, Key="in/sub/b.csv", Body=b"5,6\n")
    sm = stack.client("sagemaker")

    arn = sm.create_model(ModelName="rowsum", ExecutionRoleArn="arn:aws:iam::000000000000:role/sm",
                          PrimaryContainer={"Image": "local/sklearn",
                                            "ModelDataUrl": f"s3://{bucket}/models/rowsum/model.tar.gz"})["ModelArn"]
    assert arn.endswith(":model/rowsum")
    assert sm.describe_model(ModelName="rowsum")["PrimaryContainer"]["ModelDataUrl"].endswith("model.tar.gz")
    name = f"svc-{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    sm.create_transform_job(**job_request(name, "rowsum", bucket))
    seen, described = status_history(sm, name)
    latency = time.monotonic() - started

    assert seen[0] == "InProgress" and seen[-1] == "Completed", seen
    assert described["CreationTime"] <= described["TransformStartTime"] <= described["TransformEndTime"]
    assert described["TransformJobArn"].endswith(f":transform-job/{name}")
    assert described["TransformResources"]["InstanceCount"] == 1 and described["ModelName"] == "rowsum"
    outputs = {o["Key"]: s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
               for o in s3.list_objects_v2(Bucket=bucket, Prefix="out/")["Contents"]}
    assert outputs == {"out/a.csv.out": b"3\n7\n", "out/sub/b.csv.out": b"11\n"}  # where SageMaker puts them
    (summary,) = [j for j in sm.list_transform_jobs(NameContains=name)["TransformJobSummaries"]]
    assert summary["TransformJobStatus"] == "Completed"
    print(f"create -> Completed through the service: {latency:.2f} s")


def test_a_stopped_job_goes_stopping_then_stopped_and_leaves_no_process(sagemaker_stack):
    import psutil

    stack = sagemaker_stack
    s3, bucket = fresh_bucket(stack)
    slow = model_tarball({"code/inference.py": SLOW_HANDLER})
    s3.put_object(Bucket=bucket, Key="models/slow/model.tar.gz", Body=slow)
    for key in ("in/a.csv", "in/b.csv"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"1,2\n")
    sm = stack.client("sagemaker")
    model = f"slow-{uuid.uuid4().hex[:8]}"
    sm.create_model(ModelName=model, PrimaryContainer={"Image": "local/sklearn", "Environment": {"SLOW_SECONDS": "120"},
                                                       "ModelDataUrl": f"s3://{bucket}/models/slow/model.tar.gz"})
    name = f"stop-{uuid.uuid4().hex[:8]}"
    service = psutil.Process(stack.service_pid)

    def job_processes() -> set[int]:
        return {p.pid for p in service.children(recursive=True)
                if p.pid not in others and p.is_running() and p.status() != psutil.STATUS_ZOMBIE}

    others = {p.pid for p in service.children(recursive=True)}  # jobs of other tests, if any
    sm.create_transform_job(**job_request(name, model, bucket, instances=2))
    # the worker and its two instance processes are up
    wait_for(lambda: len(job_processes()) >= 3, timeout=60, what="the job's instance processes")

    sm.stop_transform_job(TransformJobName=name)
    assert sm.describe_transform_job(TransformJobName=name)["TransformJobStatus"] in ("Stopping", "Stopped")
    seen, described = status_history(sm, name, timeout=30)
    assert seen[-1] == "Stopped" and "FailureReason" not in described
    assert described["TransformEndTime"] >= described["TransformStartTime"]
    wait_for(lambda: not job_processes(), timeout=30, what="the job's processes to be gone")
    assert error_of(sm.stop_transform_job, TransformJobName=name)["Code"] == "ValidationException"
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix="out/")


def test_a_failed_job_says_why_and_keeps_the_good_objects(sagemaker_stack):
    stack = sagemaker_stack
    s3, bucket = fresh_bucket(stack)
    s3.put_object(Bucket=bucket, Key="models/rowsum/model.tar.gz", Body=rowsum_tarball())
    s3.put_object(Bucket=bucket, Key="in/good.csv", Body=b"1,2\n")
    s3.put_object(Bucket=bucket, Key="in/poison.csv", Body=b"1,BAD\n")
    sm = stack.client("sagemaker")
    model = f"rowsum-{uuid.uuid4().hex[:8]}"
    sm.create_model(ModelName=model, PrimaryContainer={"ModelDataUrl": f"s3://{bucket}/models/rowsum/model.tar.gz"})
    name = f"fail-{uuid.uuid4().hex[:8]}"
    sm.create_transform_job(**job_request(name, model, bucket, ModelClientConfig={"InvocationsMaxRetries": 0}))
    seen, described = status_history(sm, name)
    assert seen[-1] == "Failed"
    assert "poison.csv" in described["FailureReason"] and "cannot score row" in described["FailureReason"]
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="out/")["Contents"]]
    assert keys == ["out/good.csv.out"]
    failed = sm.list_transform_jobs(StatusEquals="Failed", NameContains=name)["TransformJobSummaries"]
    assert [j["TransformJobName"] for j in failed] == [name] and failed[0]["FailureReason"]


def test_errors_have_the_services_shapes(sagemaker_stack):
    stack = sagemaker_stack
    s3, bucket = fresh_bucket(stack)
    s3.put_object(Bucket=bucket, Key="in/a.csv", Body=b"1,2\n")
    sm = stack.client("sagemaker")
    model = f"m-{uuid.uuid4().hex[:8]}"
    container = {"Image": "local/sklearn", "ModelDataUrl": f"s3://{bucket}/models/none.tar.gz"}
    sm.create_model(ModelName=model, PrimaryContainer=container)

    missing = error_of(sm.describe_transform_job, TransformJobName="no-such-job")
    assert missing == {"Code": "ValidationException", "Message": "Could not find requested job with name no-such-job"}
    assert error_of(sm.describe_model, ModelName="no-such-model")["Code"] == "ValidationException"
    assert "already existing" in error_of(sm.create_model, ModelName=model, PrimaryContainer=container)["Message"]
    assert error_of(sm.stop_transform_job, TransformJobName="no-such-job")["Code"] == "ResourceNotFound"
    unknown_model = error_of(sm.create_transform_job, **job_request("j-unknown-model", "no-such-model", bucket))
    assert unknown_model["Code"] == "ValidationException" and "Could not find model" in unknown_model["Message"]
    too_big = error_of(sm.create_transform_job, **job_request("j-too-big", model, bucket, MaxPayloadInMB=6,
                                                                MaxConcurrentTransforms=20))
    assert too_big["Code"] == "ValidationException" and "MaxConcurrentTransforms" in too_big["Message"]
    local_path = job_request("j-file", model, bucket)
    local_path["TransformOutput"]["S3OutputPath"] = "file:///tmp/out/"
    assert "s3:// URI" in error_of(sm.create_transform_job, **local_path)["Message"]

    name = f"dup-{uuid.uuid4().hex[:8]}"
    sm.create_transform_job(**job_request(name, model, bucket))  # fails later: the artifact does not exist
    assert error_of(sm.create_transform_job, **job_request(name, model, bucket))["Code"] == "ResourceInUse"
    _, described = status_history(sm, name)
    assert described["TransformJobStatus"] == "Failed" and described["FailureReason"]

    sm.delete_model(ModelName=model)
    assert error_of(sm.describe_model, ModelName=model)["Code"] == "ValidationException"
    assert error_of(sm.delete_model, ModelName=model)["Code"] == "ValidationException"
