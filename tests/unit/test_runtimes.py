"""The model runtimes behind the same jobs: Python handler (in process, or isolated in a handler server
as the service runs it), running HTTP container, serve command.

The HTTP and serve-command runtimes talk to ``tests/fixtures/model_server.py`` (standard library
HTTP, rowsum semantics like the ``behave`` handler) on 127.0.0.1 and an ephemeral port.
"""

from __future__ import annotations

import io
import json
import os
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from engine_helpers import (
    MODEL_SERVER,
    handler_model,
    model_tarball,
    read_outputs,
    running_model_server,
    transform_request,
    write_files,
)

from airflow_bt.transform import TransformSpecError
from airflow_bt.transform.local_engine import run_transform_job
from airflow_bt.transform.runtime import (
    EMBEDDED,
    EnginePolicy,
    HttpContainerRuntime,
    IsolatedHandlerRuntime,
    ModelInvocationError,
    ModelRuntimeError,
    PythonHandlerRuntime,
    ServeCommandRuntime,
    open_runtime,
    runtime_kind,
)

SERVE = f"{sys.executable} {MODEL_SERVER}"
KINDS = ("python", "isolated", "http", "serve")
#: The embedded engine, but running Python handlers out of process as the service does.
ISOLATED = EnginePolicy(isolate_model_code=True)


def policy_for(kind: str) -> EnginePolicy:
    return ISOLATED if kind == "isolated" else EMBEDDED


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    """One running model container for the module's HTTP tests."""
    with running_model_server() as url:
        yield url


def model_for(kind: str, tmp_path: Path, server_url: str, **env: str) -> dict[str, Any]:
    if kind in ("python", "isolated"):
        return handler_model(model_tarball(tmp_path, "behave"), **env)
    if kind == "http":
        return handler_model("", image=server_url, **env)
    return handler_model("", image="my-registry/rowsum:dev", AIRFLOW_BT_SERVE_COMMAND=SERVE, **env)


def test_the_create_model_request_chooses_the_runtime() -> None:
    assert runtime_kind(handler_model("file:///m.tar.gz", image="683313688378.dkr.ecr.us-east-1.amazonaws.com/"
                                                                "sagemaker-scikit-learn:1.2-1-cpu-py3")) == "python"
    assert runtime_kind(handler_model("", image="https://models.internal:8443/churn")) == "http"
    assert runtime_kind(handler_model("", image="churn:dev", AIRFLOW_BT_SERVE_COMMAND="serve")) == "serve"
    assert isinstance(open_runtime(handler_model("file:///m.tar.gz")), PythonHandlerRuntime)
    assert isinstance(open_runtime(handler_model("", image="http://127.0.0.1:9")), HttpContainerRuntime)
    assert isinstance(open_runtime(handler_model("", AIRFLOW_BT_SERVE_COMMAND="serve")), ServeCommandRuntime)
    isolated = open_runtime(handler_model("file:///m.tar.gz"), isolate_handler=True)
    assert isinstance(isolated, IsolatedHandlerRuntime)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("instances", [1, 2])
def test_every_runtime_writes_the_same_bytes(kind: str, instances: int, tmp_path: Path, server_url: str) -> None:
    inp = write_files(tmp_path / "in", {"a.csv": b"1,2\n3,4\n", "sub/b.csv": b"5\n", "c.csv": b"id9,1,1\n"})
    req = transform_request(inp, (tmp_path / "out").as_uri(), InstanceCount=instances,
                            DataProcessing={"InputFilter": "$[-2:]", "JoinSource": "Input"})
    result = run_transform_job(req, model_for(kind, tmp_path, server_url), policy=policy_for(kind))
    assert result["TransformJobStatus"] == "Completed", result.get("FailureReason")
    assert read_outputs(tmp_path / "out") == {"a.csv.out": b"1,2,3\n3,4,7\n", "sub/b.csv.out": b"5,5\n",
                                              "c.csv.out": b"id9,1,1,2\n"}


@pytest.mark.parametrize("kind", KINDS)
def test_a_rejected_record_fails_its_object_with_the_model_message(kind: str, tmp_path: Path,
                                                                     server_url: str) -> None:
    inp = write_files(tmp_path / "in", {"a.csv": b"1\n", "b.csv": b"1\nBAD\n", "c.csv": b"2\n"})
    result = run_transform_job(transform_request(inp, (tmp_path / "out").as_uri()),
                               model_for(kind, tmp_path, server_url), policy=policy_for(kind))
    assert result["TransformJobStatus"] == "Failed"
    assert read_outputs(tmp_path / "out") == {"a.csv.out": b"1\n", "c.csv.out": b"2\n"}
    reason = result["FailureReason"]
    assert reason.startswith(f"{inp}b.csv: the model failed request 1 (records 1-2) after 1 attempt: ")
    assert reason.endswith("cannot score row 'BAD'")
    if kind == "isolated":
        assert "HTTP 500 from http://127.0.0.1:" in reason and "ValueError: cannot score row 'BAD'" in reason
    elif kind != "python":
        assert "HTTP 400 from http://127.0.0.1:" in reason


@pytest.mark.parametrize(("kind", "retries", "attempts"), [("http", 1, "2 attempts"), ("serve", 0, "1 attempt"),
                                                        ("isolated", 0, "1 attempt")])
def test_a_container_that_never_answers_times_out(kind: str, retries: int, attempts: str, tmp_path: Path,
                                                  server_url: str) -> None:
    inp = write_files(tmp_path / "in", {"a.csv": b"HANG\n", "b.csv": b"3\n"})
    req = transform_request(inp, (tmp_path / "out").as_uri(),
                            ModelClientConfig={"InvocationsTimeoutInSeconds": 1, "InvocationsMaxRetries": retries})
    result = run_transform_job(req, model_for(kind, tmp_path, server_url), policy=policy_for(kind))
    assert result["FailureReason"] == (f"{inp}a.csv: the model failed request 1 (records 1-1) after {attempts}: "
                                       "TimeoutError: no answer within InvocationsTimeoutInSeconds=1")
    assert read_outputs(tmp_path / "out") == {"b.csv.out": b"3\n"}


@pytest.mark.parametrize("kind", ["http", "serve"])
def test_unset_knobs_come_from_get_execution_parameters(kind: str, tmp_path: Path) -> None:
    params = json.dumps({"BatchStrategy": "SingleRecord", "MaxPayloadInMB": 4, "MaxConcurrentTransforms": 3})
    inp = write_files(tmp_path / "in", {"a.csv": b"1\n2\n"})
    with running_model_server(MODEL_SERVER_EXEC_PARAMS=params) as url:
        model = model_for(kind, tmp_path, url, MODEL_SERVER_EXEC_PARAMS=params)
        result = run_transform_job(transform_request(inp, (tmp_path / "out").as_uri()), model)
    assert (result["BatchStrategy"], result["MaxPayloadInMB"], result["MaxConcurrentTransforms"]) == (
        "SingleRecord", 4, 3)
    assert result["LocalEngineStats"]["requests"] == 2


def test_a_container_that_is_not_running_fails_the_job_naming_its_url(tmp_path: Path) -> None:
    inp = write_files(tmp_path / "in", {"a.csv": b"1\n"})
    with running_model_server(MODEL_SERVER_UNHEALTHY="1") as url:
        result = run_transform_job(transform_request(inp, (tmp_path / "out").as_uri()),
                                   handler_model("", image=url))
    assert result["TransformJobStatus"] == "Failed"
    assert result["FailureReason"] == (f"{inp}a.csv was not transformed: model 'test-model' could not start: "
                                       f"ModelRuntimeError: GET {url}/ping answered HTTP 500: unhealthy")


def test_http_runtime_talks_the_container_contract(server_url: str) -> None:
    with HttpContainerRuntime(base_url=server_url, timeout_s=5) as runtime:
        runtime.start({})
        assert runtime.ping() and runtime.execution_parameters() is None
        assert runtime.invoke(b"1,2\n3\n", "text/csv", "text/csv") == b"3\n3\n"
        assert runtime.invoke(b'{"features": [1, 2.5]}\n', "application/jsonlines", "") == b"3.5\n"
        with pytest.raises(ModelInvocationError, match=r"HTTP 400 from .*/invocations: cannot score row 'BAD'"):
            runtime.invoke(b"BAD\n", "text/csv", "text/csv")
        assert runtime.invoke(b"4\n", "text/csv", "text/csv") == b"4\n"  # the connection is reused after a 400
    assert runtime._connections == []


def _tarball(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_serve_command_gets_the_model_directory_port_and_environment(tmp_path: Path) -> None:
    (tmp_path / "model.tar.gz").write_bytes(_tarball({"model.json": b'{"offset": 10}'}))
    model = handler_model((tmp_path / "model.tar.gz").as_uri(), image="rowsum:dev",
                          AIRFLOW_BT_SERVE_COMMAND="{python} " + str(MODEL_SERVER) + " --port {port}",
                          MODEL_SERVER_FLAVOUR="model-env")
    runtime = ServeCommandRuntime(model, timeout_s=5)
    runtime.start({"SAGEMAKER_BATCH": "true", "SAGEMAKER_MAX_PAYLOAD_IN_MB": "6"})
    try:
        assert runtime.ping()
        env = json.loads(runtime.request("GET", "/env")[1])
        assert env["SAGEMAKER_BATCH"] == "true" and env["SAGEMAKER_MAX_PAYLOAD_IN_MB"] == "6"
        assert env["SAGEMAKER_BIND_TO_PORT"] == runtime.base_url.rsplit(":", 1)[1]
        assert env["SM_MODEL_DIR"] == runtime.model_dir and env["MODEL_SERVER_FLAVOUR"] == "model-env"
        assert runtime.invoke(b"1,2\n", "text/csv", "text/csv") == b"13\n"  # offset 10 from the artifact
        proc, temp_dir = runtime.process, runtime.temp_dir
        assert proc is not None and temp_dir is not None
    finally:
        runtime.close()
    assert proc.poll() is not None and not os.path.exists(temp_dir)
    runtime.close()  # twice is fine


def test_a_serve_command_that_exits_quotes_its_output(tmp_path: Path) -> None:
    model = handler_model("", AIRFLOW_BT_SERVE_COMMAND=SERVE, MODEL_SERVER_EXIT_AT_START="no weights file")
    runtime = ServeCommandRuntime(model)
    with pytest.raises(ModelRuntimeError) as err:
        runtime.start({})
    assert str(err.value) == (f"the serve command {SERVE!r} exited with code 3 before answering GET /ping; its "
                              "last output:\nmodel server: cannot load the model: no weights file")
    assert runtime.process is None and runtime.temp_dir is None


def test_a_serve_command_that_never_gets_healthy_is_stopped(tmp_path: Path) -> None:
    model = handler_model("", AIRFLOW_BT_SERVE_COMMAND=SERVE, MODEL_SERVER_UNHEALTHY="1",
                          AIRFLOW_BT_START_TIMEOUT="1")
    runtime = ServeCommandRuntime(model)
    with pytest.raises(ModelRuntimeError, match=r"did not answer GET http://127\.0\.0\.1:\d+/ping with 200 within "
                                                r"1 s \(AIRFLOW_BT_START_TIMEOUT\); its last output:\n"
                                                r"listening on http://127\.0\.0\.1:\d+"):
        runtime.start({})
    assert runtime.process is None


def test_an_image_only_model_needs_a_way_to_be_served(tmp_path: Path) -> None:
    inp = write_files(tmp_path / "in", {"a.csv": b"1\n"})
    with pytest.raises(TransformSpecError, match=r"^PrimaryContainer\.ModelDataUrl: is required by the local "
                                                 r"engine for image 'sklearn:1\.2'"):
        run_transform_job(transform_request(inp, (tmp_path / "out").as_uri()),
                          handler_model("", image="sklearn:1.2"))


def test_an_isolated_handler_serves_concurrent_requests_and_its_execution_parameters(tmp_path: Path) -> None:
    """The handler server answers MaxConcurrentTransforms requests at once, and what the handler's
    execution_parameters() says reaches the engine as GET /execution-parameters."""
    source = (Path(__file__).resolve().parents[1] / "fixtures" / "models" / "behave" / "code" / "inference.py")
    handler = source.read_text() + (
        "\n\ndef execution_parameters():\n"
        "    return {'BatchStrategy': 'SingleRecord', 'MaxConcurrentTransforms': 3, 'MaxPayloadInMB': 4}\n")
    archive = tmp_path / "params.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("code/inference.py")
        info.size = len(handler.encode())
        tar.addfile(info, io.BytesIO(handler.encode()))
    inp = write_files(tmp_path / "in", {"a.csv": b"WAIT3\nWAIT3\nWAIT3\nPID\n"})
    result = run_transform_job(transform_request(inp, (tmp_path / "out").as_uri()),
                               handler_model(archive.as_uri()), policy=ISOLATED)
    assert result["TransformJobStatus"] == "Completed", result.get("FailureReason")
    assert (result["BatchStrategy"], result["MaxPayloadInMB"], result["MaxConcurrentTransforms"]) == (
        "SingleRecord", 4, 3)
    *peaks, pid = (tmp_path / "out" / "a.csv.out").read_text().split()
    assert peaks == ["3", "3", "3"] and int(pid) != os.getpid()
