"""What a client of `airflow-bt local-sagemaker` can make the service do, and what it can see.

- serve commands run only on an opted-in service, and never with the engine's credentials;
- Python handler models (user code) run only on an opted-in service, and then in a child process
  that sees the container environment, never the engine's credentials; in a task they stay in process;
- model containers off loopback are called only on an opted-in service;
- every URI the engine opens on the service's behalf (manifest prefixes, artifacts, submit
  directories, ...) obeys ``--allow-file-uris``, at any depth;
- ``Describe*`` answers mask secret-named ``Environment`` values, as the task logs do.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest
from engine_helpers import FIXTURES, handler_model, inline_handler, model_tarball, transform_request, write_files

from airflow_bt.service.api import SageMakerApi
from airflow_bt.service.errors import ServiceError
from airflow_bt.transform import TransformSpecError
from airflow_bt.transform.instance import Instance, InstanceFailed, InstanceSpec
from airflow_bt.transform.local_engine import run_transform_job
from airflow_bt.transform.plan import InputObject


def service_policy(**opt_ins: bool) -> Any:
    """What `airflow-bt local-sagemaker` runs jobs with when started with ``opt_ins`` (none: no flags)."""
    return SageMakerApi(**opt_ins).policy


class FakeRunner:
    def __init__(self, name: str, request: dict[str, Any], model: dict[str, Any], *, on_started: Any,
                 on_finished: Any, stop_grace: float, policy: Any = None, on_output: Any = None) -> None:
        self.request, self.model, self.policy = request, model, policy

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def wait(self, timeout: float | None = None) -> bool:
        return True


def job_body(name: str = "j", **extra: Any) -> dict[str, Any]:
    return {"TransformJobName": name, "ModelName": "m",
            "TransformInput": {"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://b/in/"}}},
            "TransformOutput": {"S3OutputPath": "s3://b/out/"},
            "TransformResources": {"InstanceType": "ml.m5.large", "InstanceCount": 1}, **extra}


def refusal(call: Any) -> str:
    with pytest.raises(ServiceError) as info:
        call()
    assert info.value.code == "ValidationException"
    return info.value.message


# --- serve commands -----------------------------------------------------------------------------------

def test_a_serve_command_model_is_refused_unless_the_service_opted_in(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    model = {"ModelName": "m", "PrimaryContainer": {"Image": "x", "Environment": {
        "AIRFLOW_BT_SERVE_COMMAND": f"touch {shlex.quote(str(marker))}"}}}
    strict = SageMakerApi(runner_factory=FakeRunner)
    message = refusal(lambda: strict.handle("CreateModel", model))
    assert "AIRFLOW_BT_SERVE_COMMAND" in message and "--allow-serve-commands" in message
    assert "m" not in strict.models and not marker.exists()

    opted_in = SageMakerApi(runner_factory=FakeRunner, allow_serve_commands=True)
    opted_in.handle("CreateModel", model)
    opted_in.handle("CreateTransformJob", job_body())
    runner = opted_in.jobs["j"].runner
    assert isinstance(runner, FakeRunner) and runner.policy.allow_serve_commands


def test_the_services_engine_refuses_a_serve_command_too(tmp_path: Path) -> None:
    """The policy travels to the job's worker: the engine itself refuses, whatever reached it."""
    marker = tmp_path / "pwned"
    model = handler_model("", AIRFLOW_BT_SERVE_COMMAND=f"touch {shlex.quote(str(marker))}")
    req = transform_request("s3://b/in/", "s3://b/out/")
    with pytest.raises(TransformSpecError, match="--allow-serve-commands"):
        run_transform_job(req, model, policy=service_policy())
    assert not marker.exists()


_ENV_DUMPING_SERVER = """\
import json, os, sys

sys.path.insert(0, {fixtures!r})
with open(os.path.join(os.environ["DUMP_DIR"], f"env-{{os.getpid()}}.json"), "w") as fh:
    json.dump(dict(os.environ), fh)
import model_server

model_server.main()
"""

ENGINE_SECRETS = {
    "AWS_ACCESS_KEY_ID": "AKIAENGINEKEY", "AWS_SECRET_ACCESS_KEY": "engine-secret-key",
    "AWS_SESSION_TOKEN": "engine-session-token", "AWS_PROFILE": "prod",
    "AIRFLOW_CONN_AWS_DEFAULT": "aws://AKIA:secret@", "AIRFLOW__CORE__FERNET_KEY": "fernet-key-value",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql://airflow:pw@db/airflow", "SOME_API_TOKEN": "tok-123",
}


@pytest.mark.parametrize("instances", [1, 2])
def test_a_serve_command_never_inherits_the_engines_credentials(instances: int, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ENGINE_SECRETS.items():
        monkeypatch.setenv(name, value)
    script = tmp_path / "env_server.py"
    script.write_text(_ENV_DUMPING_SERVER.format(fixtures=str(FIXTURES)))
    dump = tmp_path / "dump"
    dump.mkdir()
    model = handler_model("", AIRFLOW_BT_SERVE_COMMAND=f"{{python}} {shlex.quote(str(script))} --port {{port}}",
                          DUMP_DIR=str(dump), MODEL_API_TOKEN="the-models-own")
    inp = write_files(tmp_path / "in", {"a.csv": b"1,2\n", "b.csv": b"3\n"})
    req = transform_request(inp, (tmp_path / "out").as_uri(), InstanceCount=instances,
                            Environment={"JOB_SETTING": "from-the-job"})
    result = run_transform_job(req, model)  # the embedded engine: serve commands allowed, credentials not passed
    assert result["TransformJobStatus"] == "Completed", result.get("FailureReason")

    envs = [json.loads(p.read_text()) for p in sorted(dump.glob("env-*.json"))]
    assert len(envs) == instances
    for env in envs:
        leaked = {k for k in env if k in ENGINE_SECRETS or k.startswith(("AWS_", "AIRFLOW_CONN_", "AIRFLOW__"))}
        assert not leaked, f"the serve command inherited {sorted(leaked)}"
        assert not set(env.values()) & set(ENGINE_SECRETS.values())
        # what it does get: the model's own Environment, the job's, the SAGEMAKER_* contract, a PATH
        assert env["MODEL_API_TOKEN"] == "the-models-own" and env["JOB_SETTING"] == "from-the-job"
        assert env["SAGEMAKER_BATCH"] == "true" and env["SAGEMAKER_BIND_TO_PORT"].isdigit() and env["PATH"]


# --- Describe* masking --------------------------------------------------------------------------------

def test_describe_masks_secret_named_environment_values_as_the_task_logs_do() -> None:
    api = SageMakerApi(runner_factory=FakeRunner, allow_model_code=True)
    api.handle("CreateModel", {"ModelName": "m", "PrimaryContainer": {
        "ModelDataUrl": "s3://b/m.tar.gz",
        "Environment": {"DB_PASSWORD": "hunter2-long", "API_TOKEN": "tok-abcdef", "MODE": "fast"}}})
    api.handle("CreateTransformJob", job_body(Environment={"SERVICE_SECRET": "s3cr3t-value", "THRESHOLD": "0.5"}))

    described = api.handle("DescribeModel", {"ModelName": "m"})["PrimaryContainer"]["Environment"]
    assert described == {"DB_PASSWORD": "***", "API_TOKEN": "***", "MODE": "fast"}
    job = api.handle("DescribeTransformJob", {"TransformJobName": "j"})
    assert job["Environment"] == {"SERVICE_SECRET": "***", "THRESHOLD": "0.5"}
    # the job itself still runs with the real values
    runner = api.jobs["j"].runner
    assert isinstance(runner, FakeRunner)
    assert runner.model["PrimaryContainer"]["Environment"]["DB_PASSWORD"] == "hunter2-long"
    assert runner.request["Environment"]["SERVICE_SECRET"] == "s3cr3t-value"


# --- file:// URIs at any depth ------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["model", "job"])
def test_a_file_submit_directory_is_refused_like_any_file_uri(where: str) -> None:
    api = SageMakerApi(runner_factory=FakeRunner, allow_model_code=True)
    submit = {"SAGEMAKER_SUBMIT_DIRECTORY": "file:///etc/"}
    model = {"ModelName": "m", "PrimaryContainer": {"ModelDataUrl": "s3://b/m.tar.gz"}}
    if where == "model":
        model["PrimaryContainer"]["Environment"] = submit
        message = refusal(lambda: api.handle("CreateModel", model))
        assert message.startswith("PrimaryContainer.Environment.SAGEMAKER_SUBMIT_DIRECTORY:")
    else:
        api.handle("CreateModel", model)
        message = refusal(lambda: api.handle("CreateTransformJob", job_body(Environment=submit)))
        assert message.startswith("Environment.SAGEMAKER_SUBMIT_DIRECTORY:") and "j" not in api.jobs
    assert "file:///etc/" in message and "--allow-file-uris" in message


@pytest.fixture
def moto_s3(monkeypatch: pytest.MonkeyPatch) -> Any:
    moto = pytest.importorskip("moto")
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    import boto3

    with moto.mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="bkt")
        yield s3


@pytest.mark.parametrize("instances", [1, 2])
def test_an_s3_manifest_with_a_file_prefix_is_refused_and_nothing_is_copied(instances: int, tmp_path: Path,
                                                                           moto_s3: Any) -> None:
    # numbers, so the rowsum model would score them and the .out objects would carry them into S3
    host_files = write_files(tmp_path / "host", {"passwd": b"40,2\n", "shadow": b"1,2\n"})
    moto_s3.put_object(Bucket="bkt", Key="models/rowsum.tar.gz",
                       Body=Path(model_tarball(tmp_path, "rowsum").removeprefix("file://")).read_bytes())
    moto_s3.put_object(Bucket="bkt", Key="in/m.manifest",
                       Body=json.dumps([{"prefix": host_files}, "passwd", "shadow"]).encode())
    req = transform_request("s3://bkt/in/m.manifest", "s3://bkt/out/", S3DataType="ManifestFile",
                            InstanceCount=instances)
    result = run_transform_job(req, handler_model("s3://bkt/models/rowsum.tar.gz"),
                               policy=service_policy(allow_model_code=True))

    assert result["TransformJobStatus"] == "Failed"
    reason = result["FailureReason"]
    assert "s3://bkt/in/m.manifest" in reason and repr(host_files) in reason and "--allow-file-uris" in reason
    assert moto_s3.list_objects_v2(Bucket="bkt", Prefix="out/")["KeyCount"] == 0


def test_every_uri_an_instance_opens_obeys_the_policy(tmp_path: Path) -> None:
    """Below the request checks: an instance refuses a file:// artifact, submit directory, input or output."""
    artifact = model_tarball(tmp_path, "rowsum")
    inp = write_files(tmp_path / "in", {"a.csv": b"1\n"})
    obj = InputObject(0, f"{inp}/a.csv", "a.csv", (tmp_path / "out" / "a.csv.out").as_uri())
    events: list[Any] = []
    spec = InstanceSpec(0, transform_request(inp, (tmp_path / "out").as_uri()), handler_model(artifact), [obj],
                        policy=service_policy(allow_model_code=True))
    from airflow_bt.transform.runtime import PolicyError

    Instance(spec, events.append).run()
    (failed,) = [e for e in events if isinstance(e, InstanceFailed)]
    assert artifact in failed.message and "--allow-file-uris" in failed.message
    with pytest.raises(PolicyError, match="must be an s3:// URI"):
        Instance(spec, events.append).storage_for(obj.out_uri)
    assert not (tmp_path / "out").exists()


def test_the_embedded_engine_keeps_file_uris_and_serve_commands(tmp_path: Path) -> None:
    """In a task the requests are the user's own DAG config: the opt-ins are for the network service only."""
    inp = write_files(tmp_path / "in", {"a.csv": b"1,2\n"})
    model = handler_model("", AIRFLOW_BT_SERVE_COMMAND=f"{sys.executable} {FIXTURES / 'model_server.py'}")
    result = run_transform_job(transform_request(inp, (tmp_path / "out").as_uri()), model)
    assert result["TransformJobStatus"] == "Completed", result.get("FailureReason")
    assert (tmp_path / "out" / "a.csv.out").read_bytes() == b"3\n"


# --- Python handler models (user code) ----------------------------------------------------------------

#: A handler that records, at import, that it ran, and answers each request with what it can see:
#: its pid and the names of the credential-like variables in its os.environ.
_ENV_REPORTING_HANDLER = """
import json, os

open(os.path.join(os.environ["REPORT_DIR"], f"imported-{os.getpid()}"), "w").close()


def model_fn(model_dir):
    return None


def transform_fn(model, data, content_type, accept):
    env = dict(os.environ)
    with open(os.path.join(env["REPORT_DIR"], f"env-{os.getpid()}.json"), "w") as fh:
        json.dump(env, fh)
    return json.dumps({"pid": os.getpid(), "model": env.get("MODEL_SETTING"), "job": env.get("JOB_SETTING"),
                       "batch": env.get("SAGEMAKER_BATCH")}) + "\\n"
"""


def _reporting_job(tmp_path: Path, instances: int = 1) -> tuple[dict[str, Any], dict[str, Any], Path]:
    report = tmp_path / "report"
    report.mkdir()
    model = handler_model(inline_handler(tmp_path, "reporting", _ENV_REPORTING_HANDLER), REPORT_DIR=str(report),
                          MODEL_SETTING="the-models-own", MODEL_API_TOKEN="model-token")
    inp = write_files(tmp_path / "in", {"a.csv": b"1,2\n", "b.csv": b"3\n"})
    req = transform_request(inp, (tmp_path / "out").as_uri(), InstanceCount=instances, SplitType="None",
                            Environment={"JOB_SETTING": "from-the-job"})
    return req, model, report


def test_a_handler_model_is_refused_unless_the_service_opted_in(tmp_path: Path) -> None:
    req, model, report = _reporting_job(tmp_path)
    strict = SageMakerApi(runner_factory=FakeRunner, allow_file_uris=True)
    message = refusal(lambda: strict.handle("CreateModel", model))
    assert message.startswith("PrimaryContainer.ModelDataUrl:") and "--allow-model-code" in message
    assert "test-model" not in strict.models
    program = {"ModelName": "p", "PrimaryContainer": {"Image": "local/sklearn", "ModelDataUrl": "s3://b/m.tar.gz",
                                                      "Environment": {"SAGEMAKER_PROGRAM": "serve.py"}}}
    assert "--allow-model-code" in refusal(lambda: strict.handle("CreateModel", program))

    # the worker's engine refuses it too, before anything runs, at the job level and in an instance
    with pytest.raises(TransformSpecError, match="--allow-model-code"):
        run_transform_job(req, model, policy=service_policy(allow_file_uris=True))
    events: list[Any] = []
    obj = InputObject(0, req["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"] + "a.csv", "a.csv",
                      (tmp_path / "out" / "a.csv.out").as_uri())
    Instance(InstanceSpec(0, req, model, [obj], policy=service_policy(allow_file_uris=True)), events.append).run()
    (failed,) = [e for e in events if isinstance(e, InstanceFailed)]
    assert "--allow-model-code" in failed.message
    assert not list(report.iterdir()) and not (tmp_path / "out").exists()  # the handler never even imported

    opted_in = SageMakerApi(runner_factory=FakeRunner, allow_model_code=True)
    opted_in.handle("CreateModel", program)
    opted_in.handle("CreateTransformJob", job_body(ModelName="p"))
    runner = opted_in.jobs["j"].runner
    assert isinstance(runner, FakeRunner)
    assert runner.policy.allow_model_code and runner.policy.isolate_model_code


@pytest.mark.parametrize("instances", [1, 2])
def test_a_handler_model_run_by_the_service_never_sees_the_engines_credentials(
        instances: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ENGINE_SECRETS.items():
        monkeypatch.setenv(name, value)
    req, model, report = _reporting_job(tmp_path, instances)
    result = run_transform_job(req, model, policy=service_policy(allow_model_code=True, allow_file_uris=True))
    assert result["TransformJobStatus"] == "Completed", result.get("FailureReason")

    answers = [json.loads((tmp_path / "out" / f"{n}.csv.out").read_text()) for n in ("a", "b")]
    assert all(a["pid"] != os.getpid() for a in answers)  # not in the engine's process
    assert all((a["model"], a["job"], a["batch"]) == ("the-models-own", "from-the-job", "true") for a in answers)
    envs = [json.loads(p.read_text()) for p in sorted(report.glob("env-*.json"))]
    assert len(envs) == instances
    for env in envs:
        leaked = {k for k in env if k in ENGINE_SECRETS or k.startswith(("AWS_", "AIRFLOW_CONN_", "AIRFLOW__"))}
        assert not leaked, f"the handler saw {sorted(leaked)}"
        assert not set(env.values()) & set(ENGINE_SECRETS.values())
        assert env["MODEL_API_TOKEN"] == "model-token" and env["SM_MODEL_DIR"] and env["PATH"]


def test_the_embedded_engine_runs_a_handler_in_its_own_process(tmp_path: Path) -> None:
    """In a task the handler is the user's own code: the fast path, no child process, nothing is hidden."""
    req, model, _ = _reporting_job(tmp_path)
    result = run_transform_job(req, model)
    assert result["TransformJobStatus"] == "Completed", result.get("FailureReason")
    answers = [json.loads((tmp_path / "out" / f"{n}.csv.out").read_text()) for n in ("a", "b")]
    assert [a["pid"] for a in answers] == [os.getpid(), os.getpid()]
    assert answers[0]["model"] == "the-models-own" and answers[0]["job"] == "from-the-job"


def test_an_isolated_handler_gets_its_submit_directory_from_the_engine(tmp_path: Path, moto_s3: Any) -> None:
    """The child has no credentials: the engine fetches SAGEMAKER_SUBMIT_DIRECTORY (s3://) for it."""
    moto_s3.put_object(Bucket="bkt", Key="models/rowsum.tar.gz",
                       Body=Path(model_tarball(tmp_path, "rowsum").removeprefix("file://")).read_bytes())
    doubled = (FIXTURES / "models" / "rowsum" / "code" / "inference.py").read_text() + (
        "\n\n_predict = predict_fn\n\n\ndef predict_fn(data, model):\n"
        "    return [2 * value for value in _predict(data, model)]\n")
    moto_s3.put_object(Bucket="bkt", Key="code/inference.py", Body=doubled.encode())
    moto_s3.put_object(Bucket="bkt", Key="in/a.csv", Body=b"1,2\n3,4\n")
    model = handler_model("s3://bkt/models/rowsum.tar.gz", SAGEMAKER_SUBMIT_DIRECTORY="s3://bkt/code/")
    result = run_transform_job(transform_request("s3://bkt/in/", "s3://bkt/out/"), model,
                               policy=service_policy(allow_model_code=True))
    assert result["TransformJobStatus"] == "Completed", result.get("FailureReason")
    assert moto_s3.get_object(Bucket="bkt", Key="out/a.csv.out")["Body"].read() == b"6\n14\n"


def test_a_failing_model_fn_in_the_child_is_reported_with_its_message(tmp_path: Path) -> None:
    artifact = inline_handler(tmp_path, "broken",
                              "def model_fn(model_dir):\n    raise OSError('weights.bin missing')\n")
    inp = write_files(tmp_path / "in", {"a.csv": b"1\n"})
    result = run_transform_job(transform_request(inp, (tmp_path / "out").as_uri()), handler_model(artifact),
                               policy=service_policy(allow_model_code=True, allow_file_uris=True))
    assert result["TransformJobStatus"] == "Failed"
    assert "weights.bin missing" in result["FailureReason"] and "handler server" in result["FailureReason"]


# --- model containers off loopback --------------------------------------------------------------------

@pytest.mark.parametrize("image", ["http://10.0.0.7:8080", "http://model-container:8080", "https://example.com/m",
                                   "http://127.0.0.1.example.com:8080", "http://[::ffff:10.0.0.1]:80"])
def test_a_model_container_off_loopback_is_refused_unless_the_service_opted_in(image: str) -> None:
    model = {"ModelName": "m", "PrimaryContainer": {"Image": image}}
    strict = SageMakerApi(runner_factory=FakeRunner)
    message = refusal(lambda: strict.handle("CreateModel", model))
    assert message.startswith("PrimaryContainer.Image:") and image in message
    assert "--allow-remote-model-urls" in message and "m" not in strict.models
    with pytest.raises(TransformSpecError, match="--allow-remote-model-urls"):
        run_transform_job(transform_request("s3://b/in/", "s3://b/out/"), {**model, "ModelName": "test-model"},
                          policy=service_policy())
    SageMakerApi(runner_factory=FakeRunner, allow_remote_model_urls=True).handle("CreateModel", model)


@pytest.mark.parametrize("image", ["http://127.0.0.1:8080", "http://127.9.0.1", "http://localhost:8080/m",
                                   "http://[::1]:8080"])
def test_a_model_container_on_loopback_needs_no_flag(image: str) -> None:
    SageMakerApi(runner_factory=FakeRunner).handle("CreateModel", {"ModelName": "m", "PrimaryContainer": {
        "Image": image}})
