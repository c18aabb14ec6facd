"""The SageMaker Python SDK v2 against `airflow-bt local-sagemaker`, with moto serving S3 and CloudWatch Logs.

The most common tutorial code, ``Transformer(...).transform(...)`` then ``wait()`` (logs on), runs in the
SDK's own cached venv (tests/sdk_env.py) in a subprocess, as a user's notebook would, and prints the job's
log lines: the engine's and the model's, read from ``/aws/sagemaker/TransformJobs`` as on SageMaker.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
import uuid

import pytest
from sagemaker_stack import CREDENTIALS, fresh_bucket, model_tarball
from sdk_env import REQUIREMENT, sdk_python

pytestmark = pytest.mark.integration

#: The SDK's logs_for_transform_job(poll=10): its first DescribeTransformJob comes 10 s after wait() starts.
SDK_POLL_S = 10.0

#: Scores each CSV row with the sum of its numbers, and says so on stderr (the model container's output).
TALKING_HANDLER = '''
import sys


def model_fn(model_dir):
    print("talking model loaded", file=sys.stderr, flush=True)
    return None


def input_fn(data, content_type):
    return [line for line in data.decode().splitlines() if line]


def predict_fn(rows, model):
    print(f"talking model scored {len(rows)} rows", file=sys.stderr, flush=True)
    return [sum(float(x) for x in row.split(",")) for row in rows]


def output_fn(predictions, accept):
    return "".join(f"{p}\\n" for p in predictions)
'''

SCRIPT = textwrap.dedent('''
    import json, sys, time

    import boto3
    import sagemaker
    from sagemaker.transformer import Transformer

    cfg = json.loads(sys.argv[1])
    session = sagemaker.Session(boto_session=boto3.Session(region_name="us-east-1"), default_bucket=cfg["bucket"])
    transformer = Transformer(model_name=cfg["model"], instance_count=1, instance_type="ml.m5.large",
                              output_path=cfg["output"], accept="text/csv", assemble_with="Line",
                              sagemaker_session=session)
    transformer.transform(cfg["input"], content_type="text/csv", split_type="Line", job_name=cfg["job"], wait=False)
    print(f"WAIT-START {time.time():.3f}", flush=True)
    transformer.wait()  # logs=True, as in the tutorials
    print(f"WAIT-END {time.time():.3f}", flush=True)
''')


@pytest.fixture(scope="module")
def sdk() -> str:
    python, reason = sdk_python()
    if python is None:
        message = f"the SageMaker Python SDK ({REQUIREMENT}) could not be installed in its own venv: {reason}"
        print(f"SKIP: {message}")
        pytest.skip(message)
    return str(python)


def test_the_sdks_transformer_wait_prints_the_jobs_logs_and_returns_when_the_job_ends(sagemaker_stack, sdk, tmp_path):
    stack = sagemaker_stack
    s3, bucket = fresh_bucket(stack)
    s3.put_object(Bucket=bucket, Key="models/talking/model.tar.gz",
                  Body=model_tarball({"code/inference.py": TALKING_HANDLER}))
    s3.put_object(Bucket=bucket, Key="in/a.csv", Body=b"1,2\n3,4\n")
    model = f"talking-{uuid.uuid4().hex[:6]}"
    stack.client("sagemaker").create_model(ModelName=model, PrimaryContainer={
        "Image": "local/sklearn", "ModelDataUrl": f"s3://{bucket}/models/talking/model.tar.gz"})
    job = f"sdk-{uuid.uuid4().hex[:8]}"
    script = tmp_path / "sdk_transform.py"
    script.write_text(SCRIPT)
    cfg = {"bucket": bucket, "model": model, "job": job, "input": f"s3://{bucket}/in/", "output": f"s3://{bucket}/out/"}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AIRFLOW", "VIRTUAL_ENV", "PYTHON"))}
    env.update(stack.boto_env(), SAGEMAKER_SUPPRESS_V2_WARNING="1", HOME=str(tmp_path))  # no ~/.aws, no SDK config
    assert env["AWS_ACCESS_KEY_ID"] == CREDENTIALS["AWS_ACCESS_KEY_ID"]

    done = subprocess.run([sdk, str(script), json.dumps(cfg)], env=env, capture_output=True, text=True, timeout=180)
    out = done.stdout
    assert done.returncode == 0, f"the SDK failed:\n{out[-3000:]}\n{done.stderr[-3000:]}"
    described = stack.client("sagemaker").describe_transform_job(TransformJobName=job)
    assert described["TransformJobStatus"] == "Completed", described.get("FailureReason")

    # the job's log lines, as the SDK read them from CloudWatch Logs: the engine's and the model container's
    assert f"transform job {job} Completed: 1 of 1 objects, 2 records" in out, out
    assert "talking model loaded" in out and "talking model scored 2 rows" in out, out
    streams = stack.client("logs").describe_log_streams(logGroupName="/aws/sagemaker/TransformJobs",
                                                        logStreamNamePrefix=f"{job}/")["logStreams"]
    assert [s["logStreamName"].split("/")[1][:2] for s in streams] == ["i-"]  # one instance, one stream

    # when it returns: the SDK reads the job's status first SDK_POLL_S after wait() starts, then every 30 s while
    # it tails; once it sees the end it reads the streams and returns, without waiting for anything else
    wait_start = float(out.split("WAIT-START ", 1)[1].split()[0])
    wait_end = float(out.split("WAIT-END ", 1)[1].split()[0])
    job_end = described["TransformEndTime"].timestamp()
    seen_end = max(job_end, wait_start + SDK_POLL_S)
    print(f"job ended {job_end - wait_start:.1f} s after wait() started; wait() returned {wait_end - job_end:.1f} s "
          f"after the job's end, {wait_end - seen_end:.1f} s after the SDK's first status check that could see it")
    assert wait_end - seen_end < 5.0
