"""The local SageMaker service's actions and state machine, with fake job runners (no processes, no HTTP)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from airflow_bt.service.api import SageMakerApi
from airflow_bt.service.errors import ServiceError


class FakeRunner:
    def __init__(self, name: str, request: dict[str, Any], model: dict[str, Any], *, on_started: Any,
                 on_finished: Any, stop_grace: float, policy: Any = None, on_output: Any = None) -> None:
        self.name, self.on_started, self.on_finished, self.on_output = name, on_started, on_finished, on_output
        self.request, self.model, self.policy = request, model, policy
        self.started = self.stopped = False

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.stopped = True

    def wait(self, timeout: float | None = None) -> bool:
        return True


def api_with_model() -> SageMakerApi:
    api = SageMakerApi(runner_factory=FakeRunner, allow_model_code=True)  # a Python handler model
    api.handle("CreateModel", {"ModelName": "m", "PrimaryContainer": {"ModelDataUrl": "s3://b/m.tar.gz"}})
    return api


def create(api: SageMakerApi, name: str, **extra: Any) -> FakeRunner:
    api.handle("CreateTransformJob", {
        "TransformJobName": name, "ModelName": "m",
        "TransformInput": {"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://b/in/"}}},
        "TransformOutput": {"S3OutputPath": "s3://b/out/"},
        "TransformResources": {"InstanceType": "ml.m5.large", "InstanceCount": 1}, **extra})
    runner = api.jobs[name].runner
    assert isinstance(runner, FakeRunner) and runner.started
    return runner


def describe(api: SageMakerApi, name: str) -> dict[str, Any]:
    return api.handle("DescribeTransformJob", {"TransformJobName": name})


def code(call: Any) -> str:
    with pytest.raises(ServiceError) as info:
        call()
    return info.value.code


def test_status_transitions_and_times():
    api = api_with_model()
    runner = create(api, "ok")
    assert describe(api, "ok")["TransformJobStatus"] == "InProgress" and "TransformStartTime" not in describe(api, "ok")
    runner.on_started()
    runner.on_finished({"event": "result", "status": "Completed",
                        "knobs": {"MaxPayloadInMB": 6, "BatchStrategy": "MultiRecord", "MaxConcurrentTransforms": 1}})
    done = describe(api, "ok")
    assert done["TransformJobStatus"] == "Completed" and done["MaxPayloadInMB"] == 6
    assert done["CreationTime"] <= done["TransformStartTime"] <= done["TransformEndTime"]

    runner = create(api, "crash")
    runner.on_finished(None)  # the worker died without a result
    assert describe(api, "crash")["TransformJobStatus"] == "Failed"
    assert "exited unexpectedly" in describe(api, "crash")["FailureReason"]


def test_stop_goes_stopping_then_stopped():
    api = api_with_model()
    runner = create(api, "s")
    api.handle("StopTransformJob", {"TransformJobName": "s"})
    assert runner.stopped and describe(api, "s")["TransformJobStatus"] == "Stopping"
    api.handle("StopTransformJob", {"TransformJobName": "s"})  # stopping again is fine
    runner.on_finished(None)
    assert describe(api, "s")["TransformJobStatus"] == "Stopped" and "FailureReason" not in describe(api, "s")
    assert code(lambda: api.handle("StopTransformJob", {"TransformJobName": "s"})) == "ValidationException"
    assert code(lambda: api.handle("StopTransformJob", {"TransformJobName": "x"})) == "ResourceNotFound"


def test_list_filters_sorts_and_pages():
    api = api_with_model()
    for name in ("job-a", "job-b", "other-c"):
        create(api, name)
        time.sleep(0.002)
    api.jobs["job-b"].runner.on_finished({"status": "Completed"})  # type: ignore[union-attr]
    page = api.handle("ListTransformJobs", {"NameContains": "job", "MaxResults": 1})
    assert [j["TransformJobName"] for j in page["TransformJobSummaries"]] == ["job-b"]  # newest first
    rest = api.handle("ListTransformJobs", {"NameContains": "job", "MaxResults": 1, "NextToken": page["NextToken"]})
    assert [j["TransformJobName"] for j in rest["TransformJobSummaries"]] == ["job-a"] and "NextToken" not in rest
    done = api.handle("ListTransformJobs", {"StatusEquals": "Completed"})["TransformJobSummaries"]
    assert [j["TransformJobName"] for j in done] == ["job-b"]
    by_name = api.handle("ListTransformJobs", {"SortBy": "Name", "SortOrder": "Ascending"})["TransformJobSummaries"]
    assert [j["TransformJobName"] for j in by_name] == ["job-a", "job-b", "other-c"]
    after = api.jobs["job-b"].creation_time.timestamp()
    newer = api.handle("ListTransformJobs", {"CreationTimeAfter": after})["TransformJobSummaries"]
    assert [j["TransformJobName"] for j in newer] == ["other-c"]
    assert code(lambda: api.handle("ListTransformJobs", {"StatusEquals": "Done"})) == "ValidationException"
    assert code(lambda: api.handle("ListTransformJobs", {"MaxResults": 500})) == "ValidationException"


def test_requests_are_checked_with_the_spec():
    api = api_with_model()
    assert code(lambda: create(api, "bad name!")) == "ValidationException"
    assert code(lambda: create(api, "j", MaxPayloadInMB=101)) == "ValidationException"
    assert code(lambda: api.handle("CreateModel", {"ModelName": "n", "PrimaryContainer": {}})) == "ValidationException"
    assert code(lambda: api.handle("CreateEndpoint", {})) == "UnknownOperationException"
    assert code(lambda: api.handle("DescribeTransformJob", [])) == "SerializationException"  # type: ignore[arg-type]
    api.shutdown()
    assert code(lambda: create(api, "late")) == "ServiceUnavailable"


def test_file_uris_are_a_local_extension_off_by_default():
    api = SageMakerApi(runner_factory=FakeRunner, allow_file_uris=True, allow_model_code=True)
    api.handle("CreateModel", {"ModelName": "m", "PrimaryContainer": {"ModelDataUrl": "file:///models/m.tar.gz"}})
    strict = SageMakerApi(runner_factory=FakeRunner, allow_model_code=True)
    assert code(lambda: strict.handle("CreateModel", {"ModelName": "m", "PrimaryContainer": {
        "ModelDataUrl": "file:///models/m.tar.gz"}})) == "ValidationException"


def test_a_model_from_a_registered_package_runs_the_packages_container():
    api = SageMakerApi(runner_factory=FakeRunner, allow_model_code=True)
    spec = {"Containers": [{"Image": "sklearn:1.2", "ModelDataUrl": "s3://b/v2/model.tar.gz",
                            "Environment": {"A": "package", "B": "package"}}]}
    first = api.handle("CreateModelPackage", {"ModelPackageGroupName": "churn", "InferenceSpecification": spec})
    second = api.handle("CreateModelPackage", {"ModelPackageGroupName": "churn", "InferenceSpecification": spec})
    assert (first["ModelPackageArn"].endswith("model-package/churn/1")
            and second["ModelPackageArn"].endswith("model-package/churn/2"))
    assert api.handle("DescribeModelPackage", {"ModelPackageName": second["ModelPackageArn"]})[
        "ModelPackageVersion"] == 2
    api.handle("CreateModel", {"ModelName": "m", "PrimaryContainer": {
        "ModelPackageName": second["ModelPackageArn"], "Environment": {"B": "model"}}})
    assert api.handle("DescribeModel", {"ModelName": "m"})["PrimaryContainer"]["ModelPackageName"] == \
        second["ModelPackageArn"]  # described as created
    runner = create(api, "job")
    assert runner.model["PrimaryContainer"] == {"Image": "sklearn:1.2", "ModelDataUrl": "s3://b/v2/model.tar.gz",
                                                "Environment": {"A": "package", "B": "model"}}
    assert code(lambda: api.handle("CreateModel", {"ModelName": "n", "PrimaryContainer": {
        "ModelPackageName": "churn/9"}})) == "ValidationException"
    assert code(lambda: api.handle("CreateModel", {"ModelName": "n", "PrimaryContainer": {
        "ModelPackageName": "churn/1", "Image": "x"}})) == "ValidationException"


class RecordingLogsClient:
    """A CloudWatch Logs client that records what was put, and the job's status at that moment."""

    def __init__(self) -> None:
        self.puts: list[dict[str, Any]] = []
        self.status_at_put: list[str] = []
        self.api: SageMakerApi | None = None

    def create_log_group(self, **kwargs: Any) -> None:
        pass

    def create_log_stream(self, **kwargs: Any) -> None:
        pass

    def put_log_events(self, **kwargs: Any) -> None:
        assert self.api is not None
        self.status_at_put.append(describe(self.api, "j1")["TransformJobStatus"])
        self.puts.append(kwargs)


def test_a_job_shows_a_terminal_status_only_after_its_lines_are_in_cloudwatch():
    from airflow_bt.service.joblogs import JobLogs

    client = RecordingLogsClient()
    api = client.api = api_with_model()
    api.logs = JobLogs(client, where="fake")
    try:
        runner = create(api, "j1")
        assert isinstance(runner, FakeRunner)
        runner.on_started()
        runner.on_output("transform job j1 Failed: model error", 0)
        runner.on_finished({"status": "Failed", "failure_reason": "boom"})
        assert client.status_at_put == ["InProgress"]  # the last lines were sent while the job still ran
        assert describe(api, "j1")["TransformJobStatus"] == "Failed"
        assert [e["message"] for e in client.puts[0]["logEvents"]] == ["transform job j1 Failed: model error"]
    finally:
        api.logs.close()
