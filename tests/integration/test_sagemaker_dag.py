"""The churn DAG with backend: sagemaker, against a moto S3 server and `airflow-bt local-sagemaker`.

Real HTTP, real status transitions, the real Airflow CLI: the predictions match the local backend's
row by row; the wait defers and resumes on a real trigger run; a kill stops the job; a retry after
a crashed worker attaches to the job its earlier try started; a failed job fails the task with the
job's FailureReason.
"""

from __future__ import annotations

import io
import json
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from airflow_env import BIN, REPO, airflow, airflow_env
from data_helpers import corrupt_tenure
from sagemaker_stack import SLOW_HANDLER, Stack, model_tarball, upload_tree, wait_for

pytestmark = pytest.mark.integration
DS = "2026-06-24"
JOB_STEM = "bt-churn-20260624-"


def dag_folder(tmp_path: Path, *, gated: bool = False, check_interval: str = "0.5") -> Path:
    """The repo's DAG file and churn config, with no retries and a short status interval.

    ``gated``: the slow model, whose requests wait until ``<root>/release`` exists.
    """
    folder = tmp_path / "dags"
    (folder / "configs").mkdir(parents=True)
    shutil.copy(REPO / "dags" / "scoring_dags.py", folder)
    config = (REPO / "dags" / "configs" / "churn.yaml").read_text()
    config = config.replace("retries: 2", "retries: 0")
    config = config.replace("check_interval_seconds: 30", f"check_interval_seconds: {check_interval}")
    if gated:
        config = config.replace("/models/churn/model.tar.gz", "/models/slow/model.tar.gz")
        env = ('  model_environment: {RELEASE_URI: "{{ params.root_uri }}/release", AWS_ENDPOINT_URL_S3: '
               '"{{ conn.aws_default.extra_dejson.service_config.s3.endpoint_url }}", AWS_ACCESS_KEY_ID: testing, '
               'AWS_SECRET_ACCESS_KEY: testing, AWS_DEFAULT_REGION: us-east-1}\n')  # the model's own S3 access
        config = config.replace("transform:\n", "transform:\n" + env)
    (folder / "configs" / "churn.yaml").write_text(config)
    return folder


def s3_root(stack: Stack, demo_root: Path) -> tuple[str, str]:
    """A fresh bucket holding the demo input and models; returns (bucket, root URI)."""
    s3 = stack.client("s3")
    bucket = f"bt-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    upload_tree(s3, bucket, "root/input", demo_root / "input")
    upload_tree(s3, bucket, "root/models", demo_root / "models")
    s3.put_object(Bucket=bucket, Key="root/models/slow/model.tar.gz",
                  Body=model_tarball({"code/inference.py": SLOW_HANDLER}))
    return bucket, f"s3://{bucket}/root"


def env_for(stack: Stack, airflow_home: Path, root: str, dags: Path | None = None, **extra: str) -> dict[str, str]:
    env = airflow_env(airflow_home, None, AIRFLOW_BT_ROOT=root, **stack.airflow_env(), **extra)
    if dags is not None:
        env["AIRFLOW__CORE__DAGS_FOLDER"] = str(dags)
    return env


def conf(backend: str) -> list[str]:
    return ["-c", json.dumps({"backend": backend})]


def latest_rows(stack: Stack, bucket: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The manifest and the rows of the attempt the date's _LATEST.json points to."""
    s3 = stack.client("s3")

    def read(key: str) -> bytes:
        return bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())

    latest = json.loads(read(f"root/output/churn/dt={DS}/_LATEST.json"))
    prefix = latest["attempt_prefix"].removeprefix(f"s3://{bucket}/")
    manifest = json.loads(read(prefix + "_manifest.json"))
    rows: list[dict[str, Any]] = []
    for part in manifest["parts"]:  # typed Parquet (dags/configs/churn.yaml)
        rows.extend(pq.read_table(io.BytesIO(read(part["uri"].removeprefix(f"s3://{bucket}/")))).to_pylist())
    return manifest, rows


def jobs_of_run(stack: Stack, after: float) -> list[dict[str, Any]]:
    summaries = stack.client("sagemaker").list_transform_jobs(
        NameContains=JOB_STEM, CreationTimeAfter=after, MaxResults=100)["TransformJobSummaries"]
    return list(summaries)


def test_sagemaker_backend_defers_and_publishes_what_the_local_backend_publishes(
        sagemaker_stack, airflow_home, demo_root, tmp_path):
    stack = sagemaker_stack
    dags = dag_folder(tmp_path)
    local_bucket, local_root = s3_root(stack, demo_root)
    airflow(env_for(stack, airflow_home, local_root, dags), "dags", "test", "churn_nightly_scoring", DS,
            *conf("local"))

    sm_bucket, sm_root = s3_root(stack, demo_root)
    started = time.time()
    proc = airflow(env_for(stack, airflow_home, sm_root, dags, AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE="true"),
                   "dags", "test", "churn_nightly_scoring", DS, *conf("sagemaker"))
    log = proc.stdout + proc.stderr
    assert "state=failed" not in log
    assert "deferring: the triggerer polls transform job" in log  # the wait ran on a trigger, then resumed

    local_manifest, local_rows = latest_rows(stack, local_bucket)
    sm_manifest, sm_rows = latest_rows(stack, sm_bucket)
    assert len(sm_rows) == len(local_rows) == 3000
    for i, (ours, theirs) in enumerate(zip(sm_rows, local_rows, strict=True)):
        assert ours == theirs, f"row {i}"

    transform = sm_manifest["transform"]
    assert transform["backend"] == "sagemaker" and transform["status"] == "Completed"
    assert transform["job_name"].startswith(JOB_STEM) and "-t" not in transform["job_name"][len(JOB_STEM):]
    assert transform["output_uri"].startswith(f"{sm_root}/work/churn/dt={DS}/")
    assert transform["output_uri"].endswith(f"/transform/{transform['job_name']}/")
    assert transform["instance_count"] == 1  # dags/configs/churn.yaml
    assert transform["billable_instance_seconds"] > 0
    assert transform["cost"] == pytest.approx(transform["billable_instance_seconds"] / 3600 * 0.23, abs=1e-6)
    assert local_manifest["transform"]["backend"] == "local" and "cost" in local_manifest["transform"]
    assert "billable instance-seconds, cost $" in log

    (job,) = jobs_of_run(stack, started)
    assert job["TransformJobName"] == transform["job_name"] and job["TransformJobStatus"] == "Completed"
    described = stack.client("sagemaker").describe_transform_job(TransformJobName=job["TransformJobName"])
    assert described["ModelName"].startswith("churn-model-")  # created from the config, named by its hash


def _start_dag(stack: Stack, env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        return subprocess.Popen([str(BIN / "airflow"), "dags", "test", "churn_nightly_scoring", DS,
                                 *conf("sagemaker")], env=env, stdout=log, stderr=subprocess.STDOUT)


def _service_children(stack: Stack, ignore: frozenset[int] = frozenset()) -> set[int]:
    """The live processes the service runs jobs in (but those in ``ignore``)."""
    import psutil

    return {p.pid for p in psutil.Process(stack.service_pid).children(recursive=True)
            if p.pid not in ignore and p.is_running() and p.status() != psutil.STATUS_ZOMBIE}


def test_sigterm_to_the_task_stops_the_job(sagemaker_stack, airflow_home, demo_root, tmp_path):
    stack = sagemaker_stack
    _, root = s3_root(stack, demo_root)
    env = env_for(stack, airflow_home, root, dag_folder(tmp_path, gated=True))
    started = time.time()
    log_path = tmp_path / "dag.log"
    others = frozenset(_service_children(stack))  # jobs of other tests, if any
    proc = _start_dag(stack, env, log_path)
    try:
        job = wait_for(lambda: [j for j in jobs_of_run(stack, started) if j["TransformJobStatus"] == "InProgress"],
                       timeout=90, what="the transform job to be InProgress")[0]
        wait_for(lambda: _service_children(stack, others), timeout=30, what="the job's worker processes")
        proc.send_signal(signal.SIGTERM)
        sm = stack.client("sagemaker")
        wait_for(lambda: sm.describe_transform_job(TransformJobName=job["TransformJobName"])["TransformJobStatus"]
                 == "Stopped", timeout=60, what="the job to be Stopped")
        assert proc.wait(timeout=90) != 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = log_path.read_text()
    assert "task killed: stopping transform job" in log  # on_kill
    # Airflow 3 lets the task see the job end Stopped; Airflow 2 raises AirflowTaskTerminated after on_kill
    assert f"transform job {job['TransformJobName']} ended Stopped" in log or "received SIGTERM" in log
    wait_for(lambda: not _service_children(stack, others), timeout=30, what="the job's processes to be gone")


def test_retry_after_a_worker_crash_attaches_to_the_running_job(sagemaker_stack, airflow_home, demo_root, tmp_path):
    stack = sagemaker_stack
    bucket, root = s3_root(stack, demo_root)
    env = env_for(stack, airflow_home, root, dag_folder(tmp_path, gated=True))
    started = time.time()
    proc = _start_dag(stack, env, tmp_path / "crashed.log")
    try:
        wait_for(lambda: [j for j in jobs_of_run(stack, started) if j["TransformJobStatus"] == "InProgress"],
                 timeout=90, what="the transform job to be InProgress")
    finally:
        proc.kill()  # the worker dies: no on_kill, the job goes on
        proc.wait()
    retry_log = tmp_path / "retry.log"
    with retry_log.open("wb") as out:  # the same DAG run (found by its logical date), the transform task again
        retry = subprocess.Popen([str(BIN / "airflow"), "tasks", "test", "churn_nightly_scoring", "transform", DS],
                                 env=env, stdout=out, stderr=subprocess.STDOUT)
    release = {"Bucket": bucket, "Key": "root/release", "Body": b""}
    try:
        wait_for(lambda: "attaching to it instead of starting another" in retry_log.read_text(), timeout=90,
                 what="the retry to attach")
        (job,) = jobs_of_run(stack, started)
        assert job["TransformJobStatus"] == "InProgress"  # the retry attached to the running job
        stack.client("s3").put_object(**release)  # let the job finish
        assert retry.wait(timeout=90) == 0, retry_log.read_text()[-3000:]
    finally:
        stack.client("s3").put_object(**release)  # never leave a held job running in the service
        if retry.poll() is None:
            retry.kill()
            retry.wait()
    log = retry_log.read_text()
    assert "of an earlier try is InProgress: attaching to it instead of starting another" in log
    jobs = jobs_of_run(stack, started)
    assert len(jobs) == 1, jobs  # the retry started no second job
    assert jobs[0]["TransformJobStatus"] == "Completed"
    assert f"transform job {jobs[0]['TransformJobName']} Completed:" in log and "billable instance-seconds" in log


def test_failed_job_fails_the_task_with_the_failure_reason(sagemaker_stack, airflow_home, demo_root, tmp_path):
    stack = sagemaker_stack
    data = tmp_path / "data"
    shutil.copytree(demo_root / "input", data / "input")
    victim = data / "input/churn" / f"dt={DS}" / "customers-0003.csv"
    corrupt_tenure(victim)
    s3 = stack.client("s3")
    bucket = f"bt-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    upload_tree(s3, bucket, "root/input", data / "input")
    upload_tree(s3, bucket, "root/models", demo_root / "models")

    env = env_for(stack, airflow_home, f"s3://{bucket}/root", dag_folder(tmp_path))
    proc = airflow(env, "dags", "test", "churn_nightly_scoring", DS, *conf("sagemaker"), check=False)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "ended Failed" in log
    assert "column 'tenure_months' must be numeric, got 'twelve'" in log  # the job's FailureReason
    assert "customers-0003.csv" in log  # and the input file behind the failing shard
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix="root/output/")
