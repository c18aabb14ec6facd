"""The sagemaker backend, the transform operator's sagemaker path, the trigger and the sensor, on a fake hook."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from sagemaker_stack import botocore_report

from airflow_bt.compat import AirflowException, AirflowFailException
from airflow_bt.hooks.transform_job import TransformJobHook
from airflow_bt.links.sagemaker import TransformJobLink, TransformJobLogsLink
from airflow_bt.operators.transform import BatchTransformOperator
from airflow_bt.sensors.transform_job import TransformJobSensor
from airflow_bt.steps.naming import retry_job_name, run_job_name
from airflow_bt.storage import for_uri
from airflow_bt.transform import attempts
from airflow_bt.transform.attempts import JobChoice
from airflow_bt.transform.backends.sagemaker import SageMakerBackend
from airflow_bt.transform.billing import billing
from airflow_bt.transform.fingerprint import versioned_model_name
from airflow_bt.transform.request import build_model_request
from airflow_bt.transform.status import JobWaitTimeout, TransformJobStatus
from airflow_bt.triggers.transform_job import TransformJobTrigger

log = logging.getLogger("test")
T0 = datetime(2026, 6, 25, 2, 0, tzinfo=timezone.utc)
BASE = "bt-churn-20260624-3fa9c1"


def not_found(operation: str, message: str) -> ClientError:
    return ClientError({"Error": {"Code": "ValidationException", "Message": message}}, operation)


def job(name: str, status: str, *, seconds: float = 90.0, instances: int = 2, **extra: Any) -> dict[str, Any]:
    out = {"TransformJobName": name, "TransformJobArn": f"arn:aws:sagemaker:us-east-1:1:transform-job/{name}",
           "TransformJobStatus": status, "ModelName": "churn-model",
           "TransformResources": {"InstanceType": "ml.m5.xlarge", "InstanceCount": instances},
           # what DescribeTransformJob returns of the settings the operator below sends
           "TransformInput": {"DataSource": {"S3DataSource": {"S3DataType": "ManifestFile", "S3Uri": "s3://b/m"}},
                              "ContentType": "text/csv", "SplitType": "Line", "CompressionType": "None"},
           "BatchStrategy": "MultiRecord",
           "TransformOutput": {"S3OutputPath": f"s3://b/work/run/transform/{name}/", "Accept": "text/csv",
                               "AssembleWith": "Line"},
           "CreationTime": T0, "TransformStartTime": T0}
    if TransformJobStatus(status).terminal:
        out["TransformEndTime"] = T0 + timedelta(seconds=seconds)
    for key, value in extra.items():  # a partial TransformOutput etc. overrides only the fields it names
        out[key] = {**out[key], **value} if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


class FakeHook:
    """Just enough of SageMakerHook: jobs whose status follows a script, one status per describe."""

    conn_region_name = "us-east-1"
    conn_partition = "aws"

    def __init__(self, **scripts: list[dict[str, Any]]) -> None:
        self.scripts = {name.replace("_", "-"): list(steps) for name, steps in scripts.items()}
        self.models: dict[str, dict[str, Any]] = {}
        self.created: list[dict[str, Any]] = []
        self.stopped: list[str] = []

    def describe_transform_job(self, name: str) -> dict[str, Any]:
        steps = self.scripts.get(name)
        if not steps:
            raise not_found("DescribeTransformJob", f"Could not find requested job with name {name}")
        return steps.pop(0) if len(steps) > 1 else steps[0]

    def create_transform_job(self, config: dict[str, Any], wait_for_completion: bool = True) -> dict[str, Any]:
        assert not wait_for_completion
        assert botocore_report("CreateTransformJob", config) == ""
        self.created.append(config)
        name = config["TransformJobName"]
        self.scripts[name] = [job(name, "InProgress"), job(name, "Completed", seconds=30)]
        return {"TransformJobArn": name}

    def describe_model(self, name: str) -> dict[str, Any]:
        if name not in self.models:
            raise not_found("DescribeModel", f'Could not find model "{name}".')
        return self.models[name]

    def create_model(self, config: dict[str, Any]) -> dict[str, Any]:
        assert botocore_report("CreateModel", config) == ""
        self.models[config["ModelName"]] = config
        return {"ModelArn": config["ModelName"]}

    def get_conn(self) -> FakeHook:
        return self

    def stop_transform_job(self, TransformJobName: str) -> None:
        self.stopped.append(TransformJobName)
        self.scripts[TransformJobName] = [job(TransformJobName, "Stopped")]


def our_hook(fake: FakeHook) -> TransformJobHook:
    """Our hook over the fake provider hook (its cached ``sagemaker`` pre-filled)."""
    hook = TransformJobHook()
    hook.__dict__["sagemaker"] = fake
    return hook


#: the prediction settings of the jobs ``job()`` describes
SETTINGS = attempts.prediction_settings(job("x", "InProgress"))


def choose(fake: FakeHook, base: str, try_number: int, *, model_name: str = "churn-model") -> JobChoice:
    backend = SageMakerBackend(our_hook(fake), log)
    jobs = attempts.describe_run_jobs(backend, base, try_number)
    return attempts.choose_job(backend, jobs, base, try_number, log, model_name=model_name, settings=SETTINGS)


# -- choosing the job of a try ---------------------------------------------------------------------------


def test_run_job_names_leave_room_for_retry_suffixes():
    base = run_job_name("a_very_long_model_name_" * 5, "2026-06-24", "manual-20260624T000000-3fa9c1")
    assert base.endswith("-20260624-3fa9c1") and len(retry_job_name(base, 99)) <= 63
    assert run_job_name("churn", "2026-06-24", "scheduled-20260625T020000-3fa9c1") == BASE


def test_the_first_try_creates_the_run_job():
    assert choose(FakeHook(), BASE, 1) == JobChoice(BASE)


@pytest.mark.parametrize("status", ["InProgress", "Stopping", "Completed"])
def test_a_retry_attaches_to_the_earlier_tries_job(status):
    hook = FakeHook(**{BASE: [job(BASE, status)]})
    choice = choose(hook, BASE, 2)
    assert choice.name == BASE and choice.existing is not None and choice.existing["TransformJobStatus"] == status


@pytest.mark.parametrize("status", ["Failed", "Stopped"])
def test_a_retry_starts_over_after_failed_or_stopped(status):
    assert choose(FakeHook(**{BASE: [job(BASE, status)]}), BASE, 2) == JobChoice(f"{BASE}-r2")


def test_the_newest_job_of_the_run_decides_and_names_never_collide():
    hook = FakeHook(**{BASE: [job(BASE, "Failed")], f"{BASE}-r2": [job(f"{BASE}-r2", "InProgress")]})
    assert choose(hook, BASE, 3).name == f"{BASE}-r2"  # try 3 attaches to try 2's job
    hook = FakeHook(**{BASE: [job(BASE, "Failed")], f"{BASE}-r2": [job(f"{BASE}-r2", "Stopped")]})
    assert choose(hook, BASE, 3) == JobChoice(f"{BASE}-r3")
    hook = FakeHook(**{BASE: [job(BASE, "Failed")], f"{BASE}-r2": [job(f"{BASE}-r2", "Failed")]})
    assert choose(hook, BASE, 2) == JobChoice(f"{BASE}-r2-2")  # the same try again


def test_a_job_of_another_model_is_not_reused():
    hook = FakeHook(**{BASE: [job(BASE, "Completed")]})  # of model churn-model
    assert choose(hook, BASE, 3, model_name="churn-model").existing is not None
    assert choose(hook, BASE, 3, model_name="churn-model-2") == JobChoice(f"{BASE}-r3")


def test_other_api_errors_are_not_mistaken_for_a_missing_job():
    class Broken(FakeHook):
        def describe_transform_job(self, name: str) -> dict[str, Any]:
            raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"}}, "DescribeTransformJob")

    with pytest.raises(ClientError):
        choose(Broken(), BASE, 1)


# -- models, waiting, stopping, billing ------------------------------------------------------------------


def test_models_are_named_by_their_config_and_created_once():
    request = {"ModelName": "churn-model", "PrimaryContainer": {"Image": "img", "ModelDataUrl": "s3://b/m.tar.gz"}}
    name = versioned_model_name("churn-model", request)
    assert name.startswith("churn-model-") and len(name) == len("churn-model-") + 8
    assert versioned_model_name("churn-model", {**request, "ModelName": "x"}) == name
    changed = {**request, "PrimaryContainer": {"Image": "img", "ModelDataUrl": "s3://b/m2.tar.gz"}}
    assert versioned_model_name("churn-model", changed) != name
    hook = FakeHook()
    assert our_hook(hook).ensure_model({**request, "ModelName": name}, log) == name
    assert our_hook(hook).ensure_model({**request, "ModelName": name}, log) == name
    assert list(hook.models) == [name]


def test_wait_returns_the_terminal_description_and_stopped_is_terminal():
    hook = FakeHook(j=[job("j", "InProgress"), job("j", "Stopping"), job("j", "Stopped")])
    sleeps: list[float] = []
    described = our_hook(hook).wait("j", check_interval=5, deadline=None, log=log, sleep=sleeps.append)
    assert described["TransformJobStatus"] == "Stopped" and sleeps == [5, 5]


def test_wait_gives_up_at_the_deadline():
    hook = FakeHook(j=[job("j", "InProgress")])
    with pytest.raises(JobWaitTimeout, match="still InProgress"):
        our_hook(hook).wait("j", check_interval=5, deadline=time.time() + 0.05, log=log, sleep=time.sleep)


def test_billing_counts_instance_seconds_and_cost():
    bill = billing(job("j", "Completed", seconds=90, instances=2), 0.23)
    assert bill.billable_instance_seconds == 180.0 and bill.cost == pytest.approx(180 / 3600 * 0.23)
    assert billing(job("j", "Completed"), None).cost is None


# -- the operator's sagemaker path -----------------------------------------------------------------------


class FakeTI:
    def __init__(self, try_number: int) -> None:
        self.try_number = try_number
        self.xcom: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value


@pytest.fixture
def shards(tmp_path: Path) -> dict[str, Any]:
    summary = {
        "format": "csv", "content_type": "text/csv", "records": 3000, "manifest_uri": "s3://b/work/run/shard-1.manifest",
        "inputs": [{"uri": "s3://b/input/customers-0001.csv", "records": 3000}],
        "shards": [{"key": "part-00000.csv", "records": 1500}, {"key": "part-00001.csv", "records": 1500}],
    }
    (tmp_path / "shard-1.json").write_text(json.dumps(summary))
    return {"summary_uri": (tmp_path / "shard-1.json").as_uri(), "work_uri": "s3://b/work/churn/dt=2026-06-24/",
            "run_slug": "scheduled-20260625T020000-3fa9c1", "manifest_uri": summary["manifest_uri"]}


def operator(shards: dict[str, Any], hook: FakeHook, **kwargs: Any) -> BatchTransformOperator:
    args: dict[str, Any] = dict(task_id="transform", shards=shards, model_name="churn-model", backend="sagemaker",
                                model_data_url="s3://b/models/churn/model.tar.gz", job_name_prefix="churn",
                                instance_count="2", max_payload_mb="6", max_concurrent_transforms="3",
                                check_interval="0.01", price_per_instance_hour="0.23", deferrable=False)
    args.update(kwargs)
    op = BatchTransformOperator(**args)
    op.__dict__["transform_hook"] = our_hook(hook)  # the cached property, pre-filled
    return op


def context(try_number: int = 1) -> Any:
    return {"ti": FakeTI(try_number), "ds": "2026-06-24"}


def test_a_retry_after_a_crash_waits_for_the_running_job_and_creates_nothing(shards):
    hook = FakeHook(**{BASE: [job(BASE, "InProgress"), job(BASE, "Completed", seconds=90)]})
    ctx = context(try_number=2)
    result = operator(shards, hook).execute(ctx)
    assert hook.created == [] and hook.models == {}
    assert result["job_name"] == BASE and result["status"] == "Completed"
    assert result["output_uri"] == f"s3://b/work/run/transform/{BASE}/"
    assert result["billable_instance_seconds"] == 180.0 and result["cost"] == pytest.approx(0.0115)
    assert ctx["ti"].xcom[TransformJobLink.key]["job_name"] == BASE
    assert ctx["ti"].xcom[TransformJobLogsLink.key]["job_name"] == BASE


def test_a_new_job_gets_its_model_and_a_botocore_valid_request_from_rendered_strings(shards):
    hook = FakeHook(**{BASE: [job(BASE, "Failed", FailureReason="boom")]})
    result = operator(shards, hook, create_model="True").execute(context(try_number=2))
    (request,) = hook.created
    assert request["TransformJobName"] == f"{BASE}-r2" == result["job_name"]
    assert request["TransformResources"]["InstanceCount"] == 2 and request["MaxConcurrentTransforms"] == 3
    assert request["TransformOutput"]["S3OutputPath"] == (
        f"s3://b/work/churn/dt=2026-06-24/scheduled-20260625T020000-3fa9c1/transform/{BASE}-r2/")
    assert request["ModelName"] in hook.models and request["ModelName"].startswith("churn-model-")
    assert result["cost"] == pytest.approx(60 / 3600 * 0.23, abs=1e-6)


#: an artifact URL that is stat'ed without a network (none there: the request alone is the model's identity)
LOCAL_ARTIFACT = "file:///nonexistent/models/churn/model.tar.gz"


def test_every_request_setting_reaches_the_job_and_the_model_and_botocore_accepts_them(shards):
    """FakeHook checks each CreateTransformJob/CreateModel with botocore's own parameter validation."""
    hook = FakeHook()
    operator(shards, hook, create_model=True, model_data_url=LOCAL_ARTIFACT, input_filter="$[1:]", output_filter="$[0]",
             model_client_config={"invocations_timeout_seconds": "600", "max_retries": 1},
             tags={"team": "risk", "cost-center": 42}, kms_key_id="arn:aws:kms:us-east-1:1:key/out",
             volume_kms_key_id="arn:aws:kms:us-east-1:1:key/vol",
             vpc_config={"security_group_ids": ["sg-1"], "subnets": ["subnet-1", "subnet-2"]},
             enable_network_isolation="true").execute(context(1))
    (request,) = hook.created
    (model,) = hook.models.values()
    assert request["DataProcessing"] == {"InputFilter": "$[1:]", "OutputFilter": "$[0]"}
    assert request["ModelClientConfig"] == {"InvocationsTimeoutInSeconds": 600, "InvocationsMaxRetries": 1}
    tags = [{"Key": "team", "Value": "risk"}, {"Key": "cost-center", "Value": "42"}]
    assert request["Tags"] == tags and model["Tags"] == tags
    assert request["TransformOutput"]["KmsKeyId"] == "arn:aws:kms:us-east-1:1:key/out"
    assert request["TransformResources"]["VolumeKmsKeyId"] == "arn:aws:kms:us-east-1:1:key/vol"
    assert model["VpcConfig"] == {"SecurityGroupIds": ["sg-1"], "Subnets": ["subnet-1", "subnet-2"]}
    assert model["EnableNetworkIsolation"] is True


def test_data_capture_and_a_model_package_reach_the_requests_and_botocore_accepts_them(shards):
    hook = FakeHook()
    arn = "arn:aws:sagemaker:us-east-1:123456789012:model-package/churn/3"
    operator(shards, hook, create_model=True, model_package_name=arn, model_data_url=None,
             data_capture={"destination_s3_uri": "s3://bucket/capture/churn", "kms_key_id": "alias/capture"},
             model_environment={"CHURN_PREDICT_THREADS": "1"}).execute(context(1))
    (request,) = hook.created
    (model,) = hook.models.values()
    assert request["DataCaptureConfig"] == {"DestinationS3Uri": "s3://bucket/capture/churn",
                                            "KmsKeyId": "alias/capture"}
    assert model["PrimaryContainer"] == {"ModelPackageName": arn, "Environment": {"CHURN_PREDICT_THREADS": "1"}}


@pytest.mark.parametrize(("setting", "match"), [
    ({"data_capture": {"kms_key_id": "k"}}, "data_capture needs destination_s3_uri"),
    ({"data_capture": {"destination_s3_uri": "s3://b/c", "generate_inference_id": True}}, "generate_inference_id"),
    ({"data_capture": {"destination_s3_uri": "gs://b/c"}}, "DataCaptureConfig.DestinationS3Uri"),
    ({"model_package_name": "churn/3/x"}, "PrimaryContainer.ModelPackageName"),
    ({"model_package_name": "churn", "model_data_url": LOCAL_ARTIFACT}, "model_package_name and model_data_url"),
])
def test_a_bad_capture_or_package_setting_fails_before_anything_is_created(shards, setting, match):
    hook = FakeHook()
    settings = {"model_data_url": None if "model_package_name" in setting else LOCAL_ARTIFACT, **setting}
    with pytest.raises(AirflowFailException, match=match):
        operator(shards, hook, create_model=True, **settings).execute(context(1))
    assert hook.created == [] and hook.models == {}


@pytest.mark.parametrize(("setting", "match"), [
    ({"model_client_config": {"timeout": 5}}, "model_client_config: unknown setting"),
    ({"model_client_config": {"max_retries": 7}}, "InvocationsMaxRetries"),
    ({"input_filter": "$[1:"}, "InputFilter"),
    ({"vpc_config": {"subnets": ["s"]}}, "vpc_config needs exactly security_group_ids and subnets"),
])
def test_a_bad_request_setting_fails_before_anything_is_created(shards, setting, match):
    hook = FakeHook()
    with pytest.raises(AirflowFailException, match=match):
        operator(shards, hook, create_model=True, model_data_url=LOCAL_ARTIFACT, **setting).execute(context(1))
    assert hook.created == [] and hook.models == {}


def test_stopped_and_failed_jobs_fail_the_task_with_their_reason(shards):
    hook = FakeHook(**{BASE: [job(BASE, "InProgress"), job(BASE, "Stopped")]})
    with pytest.raises(AirflowException, match=f"{BASE} ended Stopped"):
        operator(shards, hook).execute(context(2))
    reason = "s3://b/work/run/shard-1/part-00001.csv: row 5: column 'tenure_months' must be numeric"
    hook = FakeHook(**{BASE: [job(BASE, "InProgress"), job(BASE, "Failed", FailureReason=reason)]})
    with pytest.raises(AirflowException, match=r"ended Failed: .*tenure_months.*part-00001\.csv holds"):
        operator(shards, hook).execute(context(2))


def test_the_timeout_stops_the_job(shards):
    hook = FakeHook(**{BASE: [job(BASE, "InProgress")]})
    with pytest.raises(AirflowException, match="the job was stopped"):
        operator(shards, hook, max_ingestion_time="1", check_interval="0.2").execute(context(2))
    assert hook.stopped == [BASE]


def test_the_tasks_own_timeout_stops_the_job_but_an_api_error_does_not(shards):
    class TaskTimeout(BaseException):  # like AirflowTaskTimeout, raised inside execute by Airflow
        pass

    class Flaky(FakeHook):
        def __init__(self, error: BaseException) -> None:
            super().__init__(**{BASE: [job(BASE, "InProgress")]})
            self.error, self.calls = error, 0

        def describe_transform_job(self, name: str) -> dict[str, Any]:
            self.calls += 1
            if self.calls > 2:  # choose_job looked for -r2 and found the base job; then the wait begins
                raise self.error
            return super().describe_transform_job(name)

    hook = Flaky(TaskTimeout())
    with pytest.raises(TaskTimeout):
        operator(shards, hook).execute(context(2))
    assert hook.stopped == [BASE]
    hook = Flaky(ClientError({"Error": {"Code": "InternalFailure", "Message": "x"}}, "DescribeTransformJob"))
    with pytest.raises(ClientError):
        operator(shards, hook).execute(context(2))
    assert hook.stopped == []  # the retry attaches to it instead


def test_on_kill_stops_the_running_job_once(shards):
    hook = FakeHook(**{BASE: [job(BASE, "InProgress")]})
    op = operator(shards, hook)

    def kill_while_waiting(seconds: float) -> None:
        op.on_kill()
        time.sleep(seconds)

    ours = op.transform_hook
    hook_wait = ours.wait

    def wait(*args: Any, **kwargs: Any) -> dict[str, Any]:
        return hook_wait(*args, **{**kwargs, "sleep": kill_while_waiting})

    ours.wait = wait  # type: ignore[method-assign]
    with pytest.raises(AirflowException, match="ended Stopped"):
        op.execute(context(2))
    assert hook.stopped == [BASE]
    op.on_kill()
    assert hook.stopped == [BASE]


def test_deferral_hands_the_timeout_to_the_trigger(shards):
    hook = FakeHook()
    op = operator(shards, hook, deferrable=True, max_ingestion_time="600", check_interval="15")
    with pytest.raises(BaseException) as info:  # TaskDeferred
        op.execute(context(1))
    assert type(info.value).__name__ == "TaskDeferred"
    trigger = info.value.trigger  # type: ignore[attr-defined]
    assert isinstance(trigger, TransformJobTrigger) and trigger.job_name == BASE and trigger.poll_interval == 15
    assert trigger.deadline == pytest.approx(time.time() + 600, abs=5)
    assert info.value.timeout > timedelta(seconds=600)  # type: ignore[attr-defined]  # a backstop only


@pytest.mark.parametrize(("event", "match"), [
    ({"status": "stopped", "job_name": BASE, "message": "Stopped"}, "ended Stopped"),
    ({"status": "failed", "job_name": BASE, "message": "boom"}, "ended Failed: boom"),
    ({"status": "error", "job_name": BASE, "message": "throttled"}, "throttled"),
    (None, "unexpected event"),
])
def test_the_completion_handler_checks_the_event(shards, event, match):
    hook = FakeHook(**{BASE: [job(BASE, "Failed", FailureReason="boom") if "failed" in str(event)
                              else job(BASE, "Stopped")]})
    with pytest.raises(AirflowException, match=match):
        operator(shards, hook).execute_complete(context(1), event)


def test_the_completion_handler_stops_the_job_on_timeout_and_returns_the_result_on_success(shards):
    hook = FakeHook(**{BASE: [job(BASE, "InProgress")]})
    with pytest.raises(AirflowException, match="stopped"):
        operator(shards, hook).execute_complete(context(1), {"status": "timeout", "job_name": BASE, "message": "late"})
    assert hook.stopped == [BASE]
    hook = FakeHook(**{BASE: [job(BASE, "Completed", seconds=10)]})
    result = operator(shards, hook).execute_complete(context(1), {"status": "success", "job_name": BASE})
    assert result["status"] == "Completed" and result["billable_instance_seconds"] == 20.0


def test_bad_numbers_fail_before_anything_runs(shards):
    with pytest.raises(AirflowFailException, match="price_per_instance_hour must be a number"):
        operator(shards, FakeHook(), price_per_instance_hour="cheap").execute(context(1))


# -- trigger, sensor, link -----------------------------------------------------------------------------


def first_event(trigger: TransformJobTrigger, hook: FakeHook) -> dict[str, Any]:
    trigger._hook = lambda: our_hook(hook)  # type: ignore[method-assign]

    async def run() -> Any:
        events: Iterator[Any] = trigger.run()  # type: ignore[assignment]
        return await events.__anext__()  # type: ignore[attr-defined]

    return dict(asyncio.run(run()).payload)


def test_the_trigger_fires_on_the_terminal_status_and_stopped_is_not_success():
    kwargs = TransformJobTrigger("j", poll_interval=0.01, deadline=None).serialize()[1]
    trigger = TransformJobTrigger(**kwargs)
    assert first_event(trigger, FakeHook(j=[job("j", "InProgress"), job("j", "Completed")]))["status"] == "success"
    event = first_event(TransformJobTrigger("j", poll_interval=0.01), FakeHook(j=[job("j", "Stopped")]))
    assert event["status"] == "stopped"
    event = first_event(TransformJobTrigger("j", poll_interval=0.01),
                        FakeHook(j=[job("j", "Failed", FailureReason="boom")]))
    assert event == {"status": "failed", "job_name": "j", "job_status": "Failed", "message": "boom"}


def test_the_triggers_budget_is_the_deadline():
    started = time.monotonic()
    event = first_event(TransformJobTrigger("j", poll_interval=30, deadline=time.time() + 0.2),
                        FakeHook(j=[job("j", "InProgress")]))
    assert event["status"] == "timeout" and time.monotonic() - started < 5
    assert first_event(TransformJobTrigger("nope", poll_interval=0.01), FakeHook())["status"] == "error"


def test_a_users_kill_of_the_deferred_task_stops_the_job():
    """Airflow 3.3+ calls the trigger's on_kill for a user's action (mark failed/success, clear)."""
    hook = FakeHook(j=[job("j", "InProgress")])
    trigger = TransformJobTrigger("j", poll_interval=0.01)
    trigger._hook = lambda: our_hook(hook)  # type: ignore[method-assign]
    asyncio.run(trigger.on_kill())
    assert hook.stopped == ["j"]


@pytest.mark.parametrize(("by_a_user", "stopped"), [(True, ["j"]), (False, [])])
def test_on_airflow_2_a_cancelled_trigger_stops_the_job_only_for_a_user(monkeypatch, by_a_user, stopped):
    """A triggerer shutdown leaves the task deferred (the job runs on, the next trigger attaches)."""
    import airflow_bt.triggers.transform_job as module

    monkeypatch.setattr(module, "AIRFLOW_V3", False)
    hook = FakeHook(j=[job("j", "InProgress")] * 1000)
    trigger = TransformJobTrigger("j", poll_interval=0.01)
    trigger._hook = lambda: our_hook(hook)  # type: ignore[method-assign]

    async def user_action() -> bool:
        return by_a_user

    trigger._stopped_by_a_user = user_action  # type: ignore[method-assign]

    async def run_then_cancel() -> None:
        async def consume() -> None:
            async for _ in trigger.run():  # type: ignore[attr-defined]
                pass

        task = asyncio.ensure_future(consume())
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run_then_cancel())
    assert hook.stopped == stopped


def test_the_sensor_fails_on_stopped():
    sensor = TransformJobSensor(task_id="sense", job_name="j")
    fake = FakeHook(j=[job("j", "InProgress"), job("j", "Completed"), job("j", "Stopped")])
    sensor.__dict__["transform_hook"] = our_hook(fake)
    assert sensor.poke({}) is False
    assert sensor.poke({}) is True
    assert sensor._summary == {"job_name": "j", "job_arn": "arn:aws:sagemaker:us-east-1:1:transform-job/j",
                               "status": "Completed", "output_uri": "s3://b/work/run/transform/j/"}
    with pytest.raises(AirflowFailException, match="ended Stopped"):
        sensor.poke({})


def test_the_console_link():
    link = TransformJobLink().format_link(region_name="eu-west-1", aws_domain="aws.amazon.com", job_name=BASE)
    assert link == f"https://console.aws.amazon.com/sagemaker/home?region=eu-west-1#/transform-jobs/{BASE}"
    assert TransformJobLink().format_link() == ""


def test_the_logs_link_opens_the_jobs_streams_in_the_cloudwatch_console():
    from airflow_bt.operators.transform import BatchTransformOperator
    from airflow_bt.provider_info import get_provider_info

    link = TransformJobLogsLink().format_link(region_name="eu-west-1", aws_domain="aws.amazon.com", job_name=BASE)
    assert link == ("https://console.aws.amazon.com/cloudwatch/home?region=eu-west-1#logsV2:log-groups/log-group/"
                    f"$252Faws$252Fsagemaker$252FTransformJobs$3FlogStreamNameFilter$3D{BASE}$252F")
    assert TransformJobLogsLink().format_link() == ""  # no job yet (or the local backend): no link
    assert {type(link) for link in BatchTransformOperator.operator_extra_links} == {TransformJobLink,
                                                                                  TransformJobLogsLink}
    assert "airflow_bt.links.sagemaker.TransformJobLogsLink" in get_provider_info()["extra-links"]


def test_openlineage_names_the_shards_read_and_the_predictions_written(shards):
    pytest.importorskip("airflow.providers.openlineage")
    op = operator(shards, FakeHook(**{BASE: [job(BASE, "Completed")]}))
    op.execute(context(2))
    lineage = op.get_openlineage_facets_on_complete(None)
    assert [d.name for d in lineage.outputs] == [f"work/run/transform/{BASE}"]


def test_a_new_job_after_a_failed_one_gets_a_manifest_of_just_the_shards_it_left(tmp_path):
    """Partial retry on SageMaker: the failed job's complete .out objects are kept, the rest re-run."""
    shards, hook, failed_out = _failed_run_with_one_finished_shard(tmp_path)  # part-00000 finished
    summary = json.loads((tmp_path / "shard-1.json").read_text())
    run_prefix = f"{shards['work_uri']}{shards['run_slug']}/"
    result = operator(shards, hook).execute(context(try_number=2))
    (request,) = hook.created
    source = request["TransformInput"]["DataSource"]["S3DataSource"]
    assert source["S3DataType"] == "ManifestFile" and source["S3Uri"].endswith(f"transform/{BASE}-r2.manifest")
    manifest = json.loads(Path(source["S3Uri"].removeprefix("file://")).read_text())
    assert manifest == [{"prefix": summary["shard_prefix"]}, "part-00001.csv"]
    assert request["TransformResources"]["InstanceCount"] == 1  # one shard left: one instance
    assert request["TransformOutput"]["S3OutputPath"] == f"{run_prefix}transform/{BASE}-r2/"
    # the new job's output (as described; the fake describes every job under s3://b/work/run/), then the failed one's
    assert result["prediction_prefixes"] == [f"s3://b/work/run/transform/{BASE}-r2/", failed_out.as_uri() + "/"]


def _failed_run_with_one_finished_shard(tmp_path: Path, **failed_job: Any) -> tuple[dict[str, Any], FakeHook, Path]:
    work = (tmp_path / "work").as_uri() + "/"
    slug = "scheduled-20260625T020000-3fa9c1"
    summary = {
        "format": "csv", "content_type": "text/csv", "records": 5, "shard_prefix": f"{work}{slug}/shard-1/",
        "manifest_uri": f"{work}{slug}/shard-1.manifest", "inputs": [{"uri": "file:///in/a.csv", "records": 5}],
        "shards": [{"key": "part-00000.csv", "records": 3}, {"key": "part-00001.csv", "records": 2}],
    }
    (tmp_path / "shard-1.json").write_text(json.dumps(summary))
    failed_out = tmp_path / "work" / slug / "transform" / BASE
    failed_out.mkdir(parents=True)
    (failed_out / "part-00000.csv.out").write_text("0.1\n0.2\n0.3\n")
    output = {"S3OutputPath": failed_out.as_uri() + "/", **failed_job.pop("TransformOutput", {})}
    hook = FakeHook(**{BASE: [job(BASE, "Failed", FailureReason="part-00001.csv: boom", TransformOutput=output,
                                  **failed_job)]})
    shards = {"summary_uri": (tmp_path / "shard-1.json").as_uri(), "work_uri": work, "run_slug": slug}
    return shards, hook, failed_out


@pytest.mark.parametrize("other", [{"Environment": {"THRESHOLD": "0.5"}},
                                   {"TransformOutput": {"Accept": "application/jsonlines"}},
                                   {"DataProcessing": {"InputFilter": "$[1:]"}}],
                         ids=["environment", "accept", "input-filter"])
def test_a_failed_job_with_other_prediction_settings_is_not_reused(tmp_path, other):
    shards, hook, failed_out = _failed_run_with_one_finished_shard(tmp_path, **other)
    result = operator(shards, hook).execute(context(try_number=2))
    (request,) = hook.created
    assert request["TransformJobName"] == f"{BASE}-r2"
    assert request["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"].endswith("shard-1.manifest")  # all
    assert failed_out.as_uri() + "/" not in result["prediction_prefixes"]


def test_an_earlier_running_job_with_other_settings_is_not_attached_to(shards):
    other = {"Environment": {"THRESHOLD": "0.5"}}
    hook = FakeHook(**{BASE: [job(BASE, "InProgress", **other), job(BASE, "Completed", **other)]})
    result = operator(shards, hook).execute(context(try_number=2))
    assert [r["TransformJobName"] for r in hook.created] == [f"{BASE}-r2"]
    assert result["job_name"] == f"{BASE}-r2"


def test_a_model_artifact_replaced_at_the_same_url_is_another_model_on_sagemaker(tmp_path):
    artifact = tmp_path / "model.tar.gz"
    artifact.write_bytes(b"model v1")
    probe = operator({}, FakeHook(), model_data_url=artifact.as_uri(), create_model=True)
    request = build_model_request(model_name="churn-model", model_data_url=artifact.as_uri(), image=probe.image,
                                  environment={}, execution_role_arn=None)
    etag = str(for_uri(artifact.as_uri()).stat(artifact.as_uri()).etag)
    old_name = versioned_model_name("churn-model", request, etag)
    shards, hook, failed_out = _failed_run_with_one_finished_shard(tmp_path, ModelName=old_name)
    artifact.unlink()
    artifact.write_bytes(b"model v2, retrained")  # a new upload at the same URL
    result = operator(shards, hook, model_data_url=artifact.as_uri(), create_model=True).execute(context(2))
    (request,) = hook.created
    assert request["ModelName"] != old_name and list(hook.models) == [request["ModelName"]]
    assert request["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"].endswith("shard-1.manifest")
    assert failed_out.as_uri() + "/" not in result["prediction_prefixes"]
