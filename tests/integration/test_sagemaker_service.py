"""`airflow-bt local-sagemaker` seen through plain boto3, over a moto S3 server: real HTTP, real jobs."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from botocore.exceptions import ClientError
from sagemaker_stack import (
    SERVICE_FLAGS,
    SLOW_HANDLER,
    Stack,
    fresh_bucket,
    local_sagemaker,
    model_tarball,
    rowsum_tarball,
    wait_for,
)

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


def test_the_service_runs_no_serve_command_and_reads_no_host_file_unless_started_to(sagemaker_stack, tmp_path):
    """Started without --allow-serve-commands / --allow-file-uris: a client cannot run a command, nor copy
    the service host's files into S3 through a manifest's prefix; Describe* masks secret values."""
    stack = sagemaker_stack
    s3, bucket = fresh_bucket(stack)
    sm = stack.client("sagemaker")
    marker = tmp_path / "pwned"
    command = error_of(sm.create_model, ModelName=f"cmd-{uuid.uuid4().hex[:8]}", PrimaryContainer={
        "Image": "x", "Environment": {"AIRFLOW_BT_SERVE_COMMAND": f"touch {marker}"}})
    assert command["Code"] == "ValidationException" and "--allow-serve-commands" in command["Message"]

    host = tmp_path / "host"
    host.mkdir()
    (host / "secret.csv").write_text("40,2\n")  # numbers, so the rowsum model would score it
    s3.put_object(Bucket=bucket, Key="models/rowsum/model.tar.gz", Body=rowsum_tarball())
    s3.put_object(Bucket=bucket, Key="in/steal.manifest", Body=f'[{{"prefix": "{host.as_uri()}/"}}, "secret.csv"]')
    model = f"rowsum-{uuid.uuid4().hex[:8]}"
    sm.create_model(ModelName=model, PrimaryContainer={
        "ModelDataUrl": f"s3://{bucket}/models/rowsum/model.tar.gz",
        "Environment": {"DB_PASSWORD": "hunter2-long", "MODE": "fast"}})
    assert sm.describe_model(ModelName=model)["PrimaryContainer"]["Environment"] == {
        "DB_PASSWORD": "***", "MODE": "fast"}
    name = f"steal-{uuid.uuid4().hex[:8]}"
    request = job_request(name, model, bucket, Environment={"API_TOKEN": "tok-abcdef"})
    request["TransformInput"]["DataSource"]["S3DataSource"].update(
        S3DataType="ManifestFile", S3Uri=f"s3://{bucket}/in/steal.manifest")
    sm.create_transform_job(**request)
    seen, described = status_history(sm, name)
    assert seen[-1] == "Failed" and described["Environment"] == {"API_TOKEN": "***"}
    assert host.as_uri() in described["FailureReason"] and "--allow-file-uris" in described["FailureReason"]
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix="out/")
    assert not marker.exists()


#: What the service's own environment holds beyond its S3 keys, and no model may see.
SERVICE_SECRETS = {"AWS_SESSION_TOKEN": "service-session-token", "AIRFLOW__CORE__FERNET_KEY": "service-fernet-key",
                   "AIRFLOW_CONN_WAREHOUSE": "postgresql://svc:pw@db/warehouse", "SERVICE_API_TOKEN": "svc-tok"}

#: A handler whose every answer is what it can see: its environment's credential-like names, and its own settings.
_ENV_REPORTING_HANDLER = """
import json, os


def model_fn(model_dir):
    return None


def transform_fn(model, data, content_type, accept):
    env = os.environ
    names = sorted(k for k in env if k.startswith(("AWS_", "AIRFLOW_CONN", "AIRFLOW__")) or "TOKEN" in k)
    return json.dumps({"credentials": names,
                       "secret_values": sorted(v for v in env.values() if v in SECRET_VALUES),
                       "model": env.get("MODEL_SETTING"), "job": env.get("JOB_SETTING")}) + "\\n"
"""


@contextmanager
def own_service(stack: Stack, tmp_path: Any, flags: tuple[str, ...] = SERVICE_FLAGS,
                extra_env: dict[str, str] | None = None) -> Iterator[Stack]:
    """A second `airflow-bt local-sagemaker` on the session's S3, started with ``flags`` and ``extra_env``."""
    log = tmp_path / "own-service.log"
    with local_sagemaker(stack.s3_url, log, flags, extra_env) as (url, pid):
        yield Stack(stack.s3_url, url, log, pid)


def test_a_handler_model_sees_its_own_environment_and_none_of_the_services_credentials(sagemaker_stack, tmp_path):
    with own_service(sagemaker_stack, tmp_path, extra_env=SERVICE_SECRETS) as stack:
        s3, bucket = fresh_bucket(stack)
        secret_values = sorted({*SERVICE_SECRETS.values(), "testing"})  # "testing": the service's S3 keys
        handler = _ENV_REPORTING_HANDLER.replace("SECRET_VALUES", repr(secret_values))
        s3.put_object(Bucket=bucket, Key="models/env/model.tar.gz", Body=model_tarball({"code/inference.py": handler}))
        s3.put_object(Bucket=bucket, Key="in/a.csv", Body=b"1,2\n")
        sm = stack.client("sagemaker")
        sm.create_model(ModelName="env", PrimaryContainer={
            "Image": "local/sklearn", "ModelDataUrl": f"s3://{bucket}/models/env/model.tar.gz",
            "Environment": {"MODEL_SETTING": "the-models-own", "MODEL_API_TOKEN": "model-tok"}})
        name = f"env-{uuid.uuid4().hex[:8]}"
        sm.create_transform_job(**job_request(name, "env", bucket, Environment={"JOB_SETTING": "from-the-job"}))
        _, described = status_history(sm, name)
        assert described["TransformJobStatus"] == "Completed", described.get("FailureReason")
        seen = json.loads(s3.get_object(Bucket=bucket, Key="out/a.csv.out")["Body"].read())
    # the service holds AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY ("testing") and the secrets above: none reach it
    assert seen == {"credentials": ["MODEL_API_TOKEN"], "secret_values": [], "model": "the-models-own",
                    "job": "from-the-job"}


def test_without_allow_model_code_the_service_refuses_a_handler_model(sagemaker_stack, tmp_path):
    with own_service(sagemaker_stack, tmp_path, flags=()) as stack:
        s3, bucket = fresh_bucket(stack)
        s3.put_object(Bucket=bucket, Key="models/rowsum/model.tar.gz", Body=rowsum_tarball())
        sm = stack.client("sagemaker")
        error = error_of(sm.create_model, ModelName="rowsum", PrimaryContainer={
            "Image": "local/sklearn", "ModelDataUrl": f"s3://{bucket}/models/rowsum/model.tar.gz"})
        assert error["Code"] == "ValidationException" and "--allow-model-code" in error["Message"]
        assert error_of(sm.describe_model, ModelName="rowsum")["Code"] == "ValidationException"  # not created
        remote = error_of(sm.create_model, ModelName="remote", PrimaryContainer={"Image": "http://10.0.0.7:8080"})
        assert remote["Code"] == "ValidationException" and "--allow-remote-model-urls" in remote["Message"]


def test_job_logs_go_to_cloudwatch_and_stay_in_memory_without_an_endpoint(sagemaker_stack, tmp_path):
    import urllib.request

    def run_job(stack: Stack) -> str:
        s3, bucket = fresh_bucket(stack)
        s3.put_object(Bucket=bucket, Key="models/rowsum/model.tar.gz", Body=rowsum_tarball())
        s3.put_object(Bucket=bucket, Key="in/a.csv", Body=b"1,2\n")
        sm = stack.client("sagemaker")
        model = f"rowsum-{uuid.uuid4().hex[:6]}"
        sm.create_model(ModelName=model, PrimaryContainer={
            "Image": "local/sklearn", "ModelDataUrl": f"s3://{bucket}/models/rowsum/model.tar.gz"})
        name = f"logs-{uuid.uuid4().hex[:8]}"
        sm.create_transform_job(**job_request(name, model, bucket))
        assert status_history(sm, name)[1]["TransformJobStatus"] == "Completed"
        return name

    logs = sagemaker_stack.client("logs")
    name = run_job(sagemaker_stack)  # the session's service: moto's CloudWatch Logs endpoint is configured
    (stream,) = logs.describe_log_streams(logGroupName="/aws/sagemaker/TransformJobs",
                                          logStreamNamePrefix=f"{name}/")["logStreams"]
    events = logs.get_log_events(logGroupName="/aws/sagemaker/TransformJobs", logStreamName=stream["logStreamName"],
                                 startFromHead=True)["events"]
    assert any(f"transform job {name} Completed" in e["message"] for e in events)
    assert any(e["message"].startswith("[model] airflow-bt handler server listening") for e in events)

    with own_service(sagemaker_stack, tmp_path, flags=(*SERVICE_FLAGS, "--job-logs", "memory")) as stack:
        name = run_job(stack)
        text = urllib.request.urlopen(f"{stack.sagemaker_url}/logs/{name}", timeout=10).read().decode()
        assert f"transform job {name} Completed" in text and text.startswith(f"{name}/i-")
        assert "job logs: kept in memory" in stack.service_log.read_text()
    assert logs.describe_log_streams(logGroupName="/aws/sagemaker/TransformJobs",
                                     logStreamNamePrefix=f"{name}/")["logStreams"] == []
