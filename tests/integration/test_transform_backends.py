"""The transform operator's promises, run against both backends with the same test.

``local`` runs the job on the local engine in the task's process; ``sagemaker`` runs it on
``airflow-bt local-sagemaker`` (a subprocess) through the amazon provider's hook and botocore, with the
data on a moto S3 server — the production path but for the endpoints. Each test states one promise:
a partial retry scores only what the failed try left; a retry after a crashed worker loses nothing and
pays no finished shard twice; a kill and a timeout stop the job; a job handed to a sensor publishes
every row after a partial retry.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from engine_helpers import FLAKY_ROW_13_HANDLER
from sagemaker_stack import CREDENTIALS, Stack, model_tarball, wait_for

from airflow_bt.compat import AirflowException
from airflow_bt.operators.postprocess import PublishPredictionsOperator
from airflow_bt.operators.transform import BatchTransformOperator
from airflow_bt.sensors.transform_job import TransformJobSensor
from airflow_bt.steps.layout import RunLayout
from airflow_bt.steps.shard import shard_partition
from airflow_bt.storage import for_uri

pytestmark = pytest.mark.integration

ROWS = 30
class FakeTI:
    def __init__(self, try_number: int) -> None:
        self.try_number = try_number
        self.xcom: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value


class FakeDag:
    dag_id = "churn_scoring"


def context(try_number: int) -> Any:
    return {"ti": FakeTI(try_number), "ds": "2026-06-24", "run_id": "scheduled__2026-06-24T00:00:00+00:00",
            "dag": FakeDag()}


@pytest.fixture
def aws_env(sagemaker_stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Stack:
    """boto3 (and the provider's hooks with ``aws_conn_id=None``) reach moto S3 and the local service."""
    for key, value in {**CREDENTIALS, **sagemaker_stack.boto_env()}.items():
        monkeypatch.setenv(key, value)
    return sagemaker_stack


@pytest.fixture
def run(aws_env: Stack, tmp_path: Path) -> dict[str, Any]:
    """30 rows in 3 shards on S3, the model's artifact beside them, and a marker that heals row 13."""
    s3 = aws_env.client("s3")
    bucket = f"bt-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="input/dt=2026-06-24/a.csv",
                  Body=("id,x\n" + "".join(f"{i},{i * 2}\n" for i in range(1, ROWS + 1))).encode())
    s3.put_object(Bucket=bucket, Key="models/flaky/model.tar.gz",
                  Body=model_tarball({"code/inference.py": FLAKY_ROW_13_HANDLER}))
    root = f"s3://{bucket}"
    token = uuid.uuid4().hex[:6]  # the service lives for the session: every test's run has its own job names
    slug = f"scheduled-20260625T020000-{token}"
    layout = RunLayout(work_root=f"{root}/work/churn/dt=2026-06-24/", output_root=f"{root}/output/dt=2026-06-24/",
                       slug=slug)
    store = for_uri(root, aws_conn_id=None)
    summary = shard_partition(store, f"{root}/input/dt=2026-06-24/", layout.step_prefix("shard", 1),
                              layout.step_file("shard", 1, ".manifest"), layout.step_file("shard", 1, ".json"),
                              min_shards=3)
    assert len(summary["shards"]) == 3
    return {"store": store, "layout": layout, "summary": summary, "heal": tmp_path / "healed",
            "model": f"{root}/models/flaky/model.tar.gz", "s3": s3, "bucket": bucket,
            "base": f"bt-churn-20260624-{token}",
            "shards": {"summary_uri": summary["summary_uri"], "work_uri": layout.work_root, "run_slug": slug,
                       "manifest_uri": summary["manifest_uri"]}}


def operator_args(run: dict[str, Any], backend: str, **kwargs: Any) -> dict[str, Any]:
    return {"task_id": "transform", "shards": run["shards"], "model_name": "churn-model", "job_name_prefix": "churn",
            "model_data_url": run["model"], "image": "local/handler", "backend": backend, "aws_conn_id": None,
            "create_model": True, "instance_count": "1", "batch_strategy": "SingleRecord", "max_payload_mb": "1",
            "check_interval": "0.2", "deferrable": False,
            "model_environment": {"HEAL_MARKER": str(run["heal"]), **kwargs.pop("model_environment", {})},
            **kwargs}


def transform(run: dict[str, Any], backend: str, try_number: int, **kwargs: Any) -> dict[str, Any]:
    op = BatchTransformOperator(**operator_args(run, backend, **kwargs))
    return op.execute(context(try_number))  # type: ignore[arg-type, no-any-return]


def outputs(run: dict[str, Any], job_name: str) -> list[str]:
    prefix = f"{run['layout'].run_prefix}transform/{job_name}/"
    return sorted(obj.key for obj in run["store"].list(prefix) if obj.key.endswith(".out"))


def published_rows(run: dict[str, Any], result: dict[str, Any], try_number: int = 1) -> list[str]:
    publish = PublishPredictionsOperator(task_id="publish", shards=run["shards"], transform=result,
                                         output_uri=run["layout"].output_root, prediction_columns=["p"],
                                         aws_conn_id=None)
    published = publish.execute(context(try_number))
    manifest = json.loads(run["store"].read_bytes(published["manifest_uri"]))
    return [line for part in manifest["parts"]
            for line in run["store"].read_bytes(part["uri"]).decode().splitlines()[1:]]


EXPECTED = [f"{i},{i * 2},{i}" for i in range(1, ROWS + 1)]
BACKENDS = ["local", "sagemaker"]


def describe(backend: str, job_name: str, run: dict[str, Any], running: Any = None) -> dict[str, Any] | None:
    """The job as the backend describes it: as a new try of the task sees it, or (``running``: the operator
    running the job) as that task does — a local job is known only to the task process that runs it."""
    from airflow_bt.operators.transform_try import BACKENDS as FACTORIES

    if running is not None and running._try is not None:
        return running._try.backend.describe(job_name)  # type: ignore[no-any-return]
    op = BatchTransformOperator(**operator_args(run, backend))
    return FACTORIES[backend](op, run["layout"]).describe(job_name)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_partial_retry_scores_only_what_the_failed_try_left_and_publish_gets_every_row(run, backend):
    with pytest.raises(AirflowException, match=r"ended Failed: .*row 13 cannot be scored yet"):
        transform(run, backend, 1)
    assert outputs(run, run["base"]) == ["part-00000.csv.out", "part-00002.csv.out"]  # the failed shard has none
    run["heal"].touch()
    result = transform(run, backend, 2)
    assert result["job_name"] == run["base"] + "-r2" and result["reused_shards"] == 2
    assert outputs(run, run["base"] + "-r2") == ["part-00001.csv.out"]  # only the missing shard was scored
    assert published_rows(run, result) == EXPECTED


class TaskLog(logging.Handler):
    """Every message the operator logs (its ``self.log`` goes to structlog on Airflow 3, stdlib on 2.11)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


class LoggedTransform(BatchTransformOperator):
    task_log = logging.getLogger("test.transform.task_log")

    @property
    def log(self) -> Any:  # type: ignore[override]
        return self.task_log


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_failing_jobs_task_log_ends_with_its_log_tail(run, backend):
    handler = TaskLog()
    LoggedTransform.task_log.addHandler(handler)
    LoggedTransform.task_log.setLevel(logging.INFO)
    try:
        with pytest.raises(AirflowException) as failed:
            LoggedTransform(**operator_args(run, backend)).execute(context(1))
    finally:
        LoggedTransform.task_log.removeHandler(handler)
    assert "row 13 cannot be scored yet" in str(failed.value) and "last log lines are above" in str(failed.value)
    messages = handler.messages
    header = next(i for i, m in enumerate(messages) if m.startswith("the last "))
    source = "CloudWatch Logs /aws/sagemaker/TransformJobs" if backend == "sagemaker" else "local engine's log"
    assert f"log lines of transform job {run['base']} (" in messages[header] and source in messages[header]
    tail = messages[header + 1:]
    assert tail and all(m.startswith("  | ") for m in tail), tail  # nothing after the tail but the failure
    assert any("row 13 cannot be scored yet" in m for m in tail), tail  # the engine's line about the failed object
    assert f"transform job {run['base']} Failed: 2 of 3 objects" in tail[-1], tail  # its last line


def _crash_after_create(run: dict[str, Any], backend: str, tmp_path: Path) -> int:
    """Try 1 in a process of its own that is SIGKILLed right after it created the job (a dead worker)."""
    script = tmp_path / "try1.py"
    args = operator_args(run, backend, model_environment={"SLOW_SECONDS": "0.05"})
    script.write_text(
        "import json, sys\n"
        "from airflow_bt.operators.transform import BatchTransformOperator\n"
        "class TI:\n    try_number = 1\n    def xcom_push(self, key, value): pass\n"
        f"op = BatchTransformOperator(**json.loads({json.dumps(json.dumps(args))}))\n"
        "op.execute({'ti': TI(), 'ds': '2026-06-24'})\n"
        "sys.exit(3)  # not reached: the failpoint kills the process\n")
    env = {**os.environ, "AIRFLOW_BT_FAILPOINTS": "transform.after_create",
           "AIRFLOW_BT_FAILPOINT_DIR": str(tmp_path)}
    return subprocess.run([sys.executable, str(script)], env=env, timeout=300).returncode


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_retry_after_a_crashed_worker_loses_nothing(run, backend, tmp_path):
    run["heal"].touch()
    assert _crash_after_create(run, backend, tmp_path) == -9
    assert describe(backend, run["base"], run) is not None  # try 1 created its job before it died
    result = transform(run, backend, 2, model_environment={"SLOW_SECONDS": "0.05"})
    if backend == "sagemaker":  # the job outlived the worker: the retry waited for it and started nothing
        assert result["job_name"] == run["base"]
        assert describe(backend, run["base"] + "-r2", run) is None
    else:  # a local job dies with its task process: the retry saw it Failed and started over
        dead = describe(backend, run["base"], run)
        assert dead is not None and dead["TransformJobStatus"] == "Failed" and "task process" in dead["FailureReason"]
        assert result["job_name"] == run["base"] + "-r2"
    assert result["status"] == "Completed"
    assert published_rows(run, result) == EXPECTED


def _running(backend: str, run: dict[str, Any], op: BatchTransformOperator) -> bool:
    described = describe(backend, run["base"], run, running=op)
    return bool(described and described["TransformJobStatus"] == "InProgress" and outputs(run, run["base"]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_killing_the_task_stops_its_job(run, backend):
    run["heal"].touch()
    op = BatchTransformOperator(**operator_args(run, backend, model_environment={"SLOW_SECONDS": "0.3"}))
    killer: dict[str, Any] = {}

    def kill_once_running() -> None:  # Airflow calls on_kill on SIGTERM, a timeout or "mark failed"
        try:
            wait_for(lambda: _running(backend, run, op), timeout=120, what="the job running, a first shard scored")
            killer["at"] = time.monotonic()
            op.on_kill()
        except BaseException as exc:
            killer["error"] = exc

    thread = threading.Thread(target=kill_once_running, daemon=True)
    thread.start()
    with pytest.raises(AirflowException, match="ended Stopped"):
        op.execute(context(1))  # in the main thread, as Airflow runs it (2.11 refuses execute elsewhere)
    thread.join(timeout=60)
    assert "error" not in killer and time.monotonic() - killer["at"] < 30, killer
    final = wait_for(lambda: (d := describe(backend, run["base"], run)) and d["TransformJobStatus"] == "Stopped"
                     and d, timeout=60, what="the job Stopped")
    assert final["TransformJobStatus"] == "Stopped"
    assert len(outputs(run, run["base"])) < 3  # it did not run to its end


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_timeout_stops_the_job_and_fails_the_task(run, backend):
    run["heal"].touch()
    started = time.monotonic()
    with pytest.raises(AirflowException, match="max_ingestion_time/execution_timeout reached: the job was stopped"):
        transform(run, backend, 1, max_ingestion_time="3", model_environment={"SLOW_SECONDS": "0.5"})
    assert time.monotonic() - started < 60
    final = wait_for(lambda: (d := describe(backend, run["base"], run)) and d["TransformJobStatus"] == "Stopped" and d,
                     timeout=60, what="the job Stopped")
    assert final["TransformJobStatus"] == "Stopped"


def test_a_job_handed_to_a_sensor_after_a_partial_retry_publishes_every_row(run):
    with pytest.raises(AirflowException, match="row 13"):
        transform(run, "sagemaker", 1)
    run["heal"].touch()
    handed = transform(run, "sagemaker", 2, wait_for_completion=False)
    assert handed["job_name"] == run["base"] + "-r2"
    sensor = TransformJobSensor(task_id="wait", job_name=handed["job_name"], aws_conn_id=None, poke_interval=0.2,
                                timeout=120, deferrable=False, mode="poke")
    wait_for(lambda: sensor.poke(context(1)), timeout=120, what="the sensor seeing the job Completed")
    # publish is given the transform task's value, as a DAG wires it: the earlier job's shards must count too
    assert published_rows(run, handed) == EXPECTED


def test_the_local_backend_cannot_hand_its_job_over_so_it_waits(run):
    run["heal"].touch()
    result = transform(run, "local", 1, wait_for_completion=False)
    assert result["status"] == "Completed" and published_rows(run, result) == EXPECTED
