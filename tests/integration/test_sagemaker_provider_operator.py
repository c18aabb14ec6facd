"""The amazon provider's own, unmodified SageMakerTransformOperator against `airflow-bt local-sagemaker`.

`airflow dags test` (which runs ``dag.test()``) of a DAG that creates a model and a transform job with
the provider's operator and waits for it; a second job is created without waiting and watched by
airflow_bt's TransformJobSensor in deferrable mode (a real trigger run, inline).
"""

from __future__ import annotations

import json
import uuid

import pytest
from airflow_env import airflow, airflow_env
from sagemaker_stack import SLOW_HANDLER, fresh_bucket, model_tarball, rowsum_tarball

pytestmark = pytest.mark.integration

DAG_FILE = '''
import pendulum
from airflow.providers.amazon.aws.operators.sagemaker import SageMakerTransformOperator

from airflow_bt.compat import DAG
from airflow_bt.sensors.transform_job import TransformJobSensor

BUCKET, SUFFIX = {bucket!r}, {suffix!r}


def transform(name, output, model):
    return {{
        "TransformJobName": name,
        "ModelName": model,
        "TransformInput": {{"DataSource": {{"S3DataSource": {{"S3DataType": "S3Prefix",
                                                            "S3Uri": f"s3://{{BUCKET}}/in/"}}}},
                           "ContentType": "text/csv", "SplitType": "Line"}},
        "TransformOutput": {{"S3OutputPath": f"s3://{{BUCKET}}/{{output}}/", "AssembleWith": "Line"}},
        # rendered by Jinja as strings; the provider casts them back to integers
        "TransformResources": {{"InstanceType": "ml.m5.large", "InstanceCount": "{{{{ 1 + 1 }}}}"}},
        "MaxPayloadInMB": "{{{{ 3 * 2 }}}}",
    }}


with DAG("provider_transform", start_date=pendulum.datetime(2026, 6, 1, tz="UTC"), schedule=None):
    wait = SageMakerTransformOperator(
        task_id="transform_and_wait",
        config={{
            "Model": {{"ModelName": "rowsum-" + SUFFIX, "ExecutionRoleArn": "arn:aws:iam::000000000000:role/sm",
                      "PrimaryContainer": {{"Image": "local/sklearn",
                                           "ModelDataUrl": f"s3://{{BUCKET}}/models/rowsum.tar.gz"}}}},
            "Transform": transform("provider-wait-" + SUFFIX, "out-wait", "rowsum-" + SUFFIX),
        }},
        wait_for_completion=True,
        check_interval=1,
    )
    start = SageMakerTransformOperator(  # a slow model, so the sensor has something to wait for
        task_id="transform_no_wait",
        config={{
            "Model": {{"ModelName": "slow-" + SUFFIX,
                      "PrimaryContainer": {{"Image": "local/sklearn", "Environment": {{"SLOW_SECONDS": "3"}},
                                           "ModelDataUrl": f"s3://{{BUCKET}}/models/slow.tar.gz"}}}},
            "Transform": transform("provider-nowait-" + SUFFIX, "out-nowait", "slow-" + SUFFIX),
        }},
        wait_for_completion=False,
    )
    sense = TransformJobSensor(
        task_id="sense",
        job_name="{{{{ ti.xcom_pull(task_ids='transform_no_wait')['Transform']['TransformJobName'] }}}}",
        deferrable=True, poke_interval=0.5, timeout=120,
    )
    wait >> start >> sense
'''


def test_the_providers_transform_operator_runs_against_the_local_service(sagemaker_stack, airflow_home, tmp_path):
    stack = sagemaker_stack
    s3, bucket = fresh_bucket(stack)
    s3.put_object(Bucket=bucket, Key="models/rowsum.tar.gz", Body=rowsum_tarball())
    s3.put_object(Bucket=bucket, Key="models/slow.tar.gz", Body=model_tarball({"code/inference.py": SLOW_HANDLER}))
    s3.put_object(Bucket=bucket, Key="in/a.csv", Body=b"1,2\n3,4\n")
    s3.put_object(Bucket=bucket, Key="in/b.csv", Body=b"5,6\n")
    suffix = uuid.uuid4().hex[:8]
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "provider_transform.py").write_text(DAG_FILE.format(bucket=bucket, suffix=suffix))

    env = airflow_env(airflow_home, None, AIRFLOW__CORE__DAGS_FOLDER=str(dags), **stack.airflow_env())
    proc = airflow(env, "dags", "test", "provider_transform", "2026-06-24")
    log = proc.stdout + proc.stderr
    (tmp_path / "dag.log").write_text(log)
    assert "state=failed" not in log and "Task failed" not in log
    assert "running trigger in line" in log  # the sensor deferred, the trigger ran, the sensor resumed

    expected = {"out-wait": {"a.csv.out": b"3\n7\n", "b.csv.out": b"11\n"},
                "out-nowait": {"a.csv.out": b"0.500000\n0.500000\n", "b.csv.out": b"0.500000\n"}}
    for output, outs in expected.items():
        found = {o["Key"]: s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
                 for o in s3.list_objects_v2(Bucket=bucket, Prefix=f"{output}/")["Contents"]}
        assert found == {f"{output}/{key}": body for key, body in outs.items()}
    sm = stack.client("sagemaker")
    for name in (f"provider-wait-{suffix}", f"provider-nowait-{suffix}"):
        described = sm.describe_transform_job(TransformJobName=name)
        assert described["TransformJobStatus"] == "Completed"
        assert described["TransformResources"]["InstanceCount"] == 2 and described["MaxPayloadInMB"] == 6
    assert json.dumps(sm.describe_model(ModelName=f"rowsum-{suffix}")["PrimaryContainer"]).count("rowsum.tar.gz") == 1
