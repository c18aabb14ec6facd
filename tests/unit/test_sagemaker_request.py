"""The request builder against botocore's own parameter validation of the SageMaker API."""

from __future__ import annotations

from typing import Any

import pytest
from sagemaker_stack import botocore_report

from airflow_bt.transform.request import build_model_request, build_transform_request
from airflow_bt.transform.spec import validate_model_request, validate_transform_request


def rendered_request(**overrides: Any) -> dict[str, Any]:
    """Every numeric knob as Jinja renders it (a string), as the operator receives it."""
    args: dict[str, Any] = dict(
        job_name="bt-churn-20260624-3fa9c1-r2", model_name="churn-model-46a0df4b",
        input_uri="s3://bucket/work/churn/dt=2026-06-24/run/shard-1.manifest",
        output_uri="s3://bucket/work/churn/dt=2026-06-24/run/transform/bt-churn-20260624-3fa9c1-r2/",
        content_type="text/csv", accept="text/csv", instance_type="ml.m5.xlarge", instance_count="2",
        batch_strategy="MultiRecord", max_payload_mb="6", max_concurrent_transforms="4",
        environment={"THREADS": 2}, data_processing={"InputFilter": "$[1:]", "JoinSource": "None"},
        model_client_config={"InvocationsTimeoutInSeconds": "600", "InvocationsMaxRetries": "1"},
        tags={"dag": "churn_nightly_scoring"},
    )
    args.update(overrides)
    return build_transform_request(**args)


def test_a_fully_rendered_transform_request_passes_botocore_and_our_spec():
    request = rendered_request()
    assert botocore_report("CreateTransformJob", request) == ""
    validate_transform_request(request)
    assert request["TransformResources"]["InstanceCount"] == 2
    assert (request["MaxPayloadInMB"], request["MaxConcurrentTransforms"]) == (6, 4)
    assert request["ModelClientConfig"] == {"InvocationsTimeoutInSeconds": 600, "InvocationsMaxRetries": 1}
    assert request["Environment"] == {"THREADS": "2"}


def test_the_minimal_transform_request_passes_botocore():
    request = build_transform_request(job_name="j", model_name="m", input_uri="s3://b/in/", output_uri="s3://b/out/",
                                      input_is_manifest=False, batch_strategy=None, max_payload_mb=None)
    assert botocore_report("CreateTransformJob", request) == ""
    assert "MaxPayloadInMB" not in request and "BatchStrategy" not in request


def test_botocore_would_refuse_uncast_numbers_which_is_why_the_builder_casts():
    request = rendered_request()
    request["TransformResources"]["InstanceCount"] = "2"
    assert "InstanceCount" in botocore_report("CreateTransformJob", request)
    with pytest.raises(ValueError, match="instance_count must be a whole number"):
        rendered_request(instance_count="two")


def test_model_requests_pass_botocore():
    full = build_model_request(model_name="churn-model-46a0df4b", model_data_url="s3://b/models/churn/model.tar.gz",
                               image="683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3",
                               environment={"SAGEMAKER_PROGRAM": "inference.py", "N": 1},
                               execution_role_arn="arn:aws:iam::123456789012:role/SageMakerExecution")
    assert botocore_report("CreateModel", full) == ""
    validate_model_request(full)
    bare = build_model_request(model_name="m", model_data_url=None, image="img")
    assert botocore_report("CreateModel", bare) == ""
    assert bare == {"ModelName": "m", "PrimaryContainer": {"Image": "img"}}
