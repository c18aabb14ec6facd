"""Layer 3: CreateTransformJob / CreateModel request validation."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from airflow_bt.transform import TransformSpecError, validate_model_request, validate_transform_request


def request(**overrides: Any) -> dict[str, Any]:
    req: dict[str, Any] = {
        "TransformJobName": "churn-2026-06-24-a1",
        "ModelName": "churn-model",
        "TransformInput": {
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://bucket-a/in/"}},
            "ContentType": "text/csv",
            "SplitType": "Line",
            "CompressionType": "None",
        },
        "TransformOutput": {"S3OutputPath": "file:///tmp/out/", "Accept": "text/csv", "AssembleWith": "Line"},
        "TransformResources": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 2},
        "BatchStrategy": "MultiRecord",
        "MaxPayloadInMB": 6,
        "MaxConcurrentTransforms": 4,
        "Environment": {"LOG_LEVEL": "info"},
        "ModelClientConfig": {"InvocationsTimeoutInSeconds": 60, "InvocationsMaxRetries": 1},
        "DataProcessing": {"InputFilter": "$[1:]", "OutputFilter": "$", "JoinSource": "Input"},
        "Tags": [{"Key": "team", "Value": "ds"}],
    }
    req.update(overrides)
    return req


def with_path(path: str, value: Any) -> dict[str, Any]:
    req = request()
    *parents, last = path.split(".")
    node = req
    for part in parents:
        node = node[part]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return req


_DELETE = object()


def test_a_full_valid_request_passes() -> None:
    validate_transform_request(request())


def test_a_minimal_request_passes() -> None:
    validate_transform_request({
        "TransformJobName": "j", "ModelName": "m",
        "TransformInput": {"DataSource": {"S3DataSource": {"S3DataType": "ManifestFile",
                                                           "S3Uri": "file:///data/manifest.json"}}},
        "TransformOutput": {"S3OutputPath": "s3://bucket-a/out"},
        "TransformResources": {"InstanceCount": 1},
    })


@pytest.mark.parametrize(("path", "value", "field", "rule"), [
    ("TransformJobName", "bad_name", "TransformJobName", "must match"),
    ("TransformJobName", "-lead", "TransformJobName", "must match"),
    ("TransformJobName", "a" * 64, "TransformJobName", "must be at most 63 characters, got 64"),
    ("TransformJobName", _DELETE, "TransformJobName", "is required"),
    ("ModelName", "model.v1", "ModelName", "must match"),
    ("TransformInput", _DELETE, "TransformInput", "is required"),
    ("TransformOutput", _DELETE, "TransformOutput", "is required"),
    ("TransformResources", _DELETE, "TransformResources", "is required"),
    ("TransformInput.DataSource.S3DataSource.S3DataType", "Prefix",
     "TransformInput.DataSource.S3DataSource.S3DataType", "must be one of S3Prefix, ManifestFile"),
    ("TransformInput.DataSource.S3DataSource.S3Uri", "gs://b/x",
     "TransformInput.DataSource.S3DataSource.S3Uri", "s3:// or file://"),
    ("TransformInput.DataSource.S3DataSource.S3Uri", "file://relative/x",
     "TransformInput.DataSource.S3DataSource.S3Uri", "absolute"),
    ("TransformInput.SplitType", "Csv", "TransformInput.SplitType", "None, Line, RecordIO, TFRecord"),
    ("TransformInput.CompressionType", "Zip", "TransformInput.CompressionType", "None, Gzip"),
    ("TransformInput.Extra", 1, "TransformInput.Extra", "is not a field"),
    ("TransformOutput.S3OutputPath", _DELETE, "TransformOutput.S3OutputPath", "is required"),
    ("TransformOutput.AssembleWith", "Newline", "TransformOutput.AssembleWith", "None, Line"),
    ("BatchStrategy", "Multi", "BatchStrategy", "SingleRecord, MultiRecord"),
    ("MaxPayloadInMB", 101, "MaxPayloadInMB", "from 0 to 100"),
    ("MaxPayloadInMB", -1, "MaxPayloadInMB", "from 0 to 100"),
    ("MaxPayloadInMB", "6", "MaxPayloadInMB", "got '6' (str)"),
    ("MaxConcurrentTransforms", -1, "MaxConcurrentTransforms", ">= 0"),
    ("MaxConcurrentTransforms", 17, "MaxConcurrentTransforms", "17 * 6 = 102"),
    ("TransformResources.InstanceCount", 0, "TransformResources.InstanceCount", ">= 1"),
    ("TransformResources.InstanceCount", "2", "TransformResources.InstanceCount", "got '2' (str)"),
    ("TransformResources.InstanceCount", True, "TransformResources.InstanceCount", "(bool)"),
    ("TransformResources.InstanceCount", 2.0, "TransformResources.InstanceCount", "(float)"),
    ("TransformResources.InstanceType", "m5.large", "TransformResources.InstanceType", "must match"),
    ("Environment", {f"K{i}": "v" for i in range(17)}, "Environment", "at most 16 entries"),
    ("Environment", {"1BAD": "v"}, "Environment.1BAD", "must match"),
    ("Environment", {"OK": 1}, "Environment.OK", "must be a string"),
    ("ModelClientConfig.InvocationsTimeoutInSeconds", 0, "ModelClientConfig.InvocationsTimeoutInSeconds",
     "from 1 to 3600"),
    ("ModelClientConfig.InvocationsTimeoutInSeconds", 3601, "ModelClientConfig.InvocationsTimeoutInSeconds",
     "from 1 to 3600"),
    ("ModelClientConfig.InvocationsMaxRetries", 4, "ModelClientConfig.InvocationsMaxRetries", "from 0 to 3"),
    ("DataProcessing.InputFilter", "$" + "x" * 63, "DataProcessing.InputFilter", "at most 63 characters"),
    ("DataProcessing.OutputFilter", "$" + "x" * 63, "DataProcessing.OutputFilter", "at most 63 characters"),
    ("DataProcessing.JoinSource", "Output", "DataProcessing.JoinSource", "None, Input"),
    ("MaxPayload", 6, "MaxPayload", "is not a field"),
])
def test_each_rule_names_the_field(path: str, value: Any, field: str, rule: str) -> None:
    with pytest.raises(TransformSpecError) as err:
        validate_transform_request(with_path(path, value))
    assert err.value.field == field
    assert str(err.value).startswith(f"{field}: ")
    assert rule in str(err.value)


def test_string_numbers_are_refused_with_a_hint_to_cast() -> None:
    with pytest.raises(TransformSpecError, match=r"TransformResources.InstanceCount: .*cast it"):
        validate_transform_request(with_path("TransformResources.InstanceCount", "2"))


def test_payload_and_concurrency_limits_at_the_edge() -> None:
    validate_transform_request(request(MaxConcurrentTransforms=1, MaxPayloadInMB=100))
    validate_transform_request(request(MaxConcurrentTransforms=50, MaxPayloadInMB=2))
    validate_transform_request(request(MaxConcurrentTransforms=0, MaxPayloadInMB=0))


def test_environment_with_sixteen_entries_is_fine() -> None:
    validate_transform_request(request(Environment={f"K_{i}": "v" for i in range(16)}))


def test_the_request_is_not_modified() -> None:
    req = request()
    before = copy.deepcopy(req)
    validate_transform_request(req)
    assert req == before


def test_not_a_mapping() -> None:
    with pytest.raises(TransformSpecError, match="TransformInput: must be a mapping"):
        validate_transform_request(request(TransformInput=["x"]))


def model(**container: Any) -> dict[str, Any]:
    return {"ModelName": "churn-model", "PrimaryContainer": container,
            "ExecutionRoleArn": "arn:aws:iam::1:role/x"}


def test_valid_model_requests() -> None:
    validate_model_request(model(ModelDataUrl="file:///models/churn/model.tar.gz"))
    validate_model_request(model(Image="123.dkr.ecr.eu-west-1.amazonaws.com/sklearn:1.2",
                                 ModelDataUrl="s3://bucket-a/m/model.tar.gz",
                                 Environment={"SAGEMAKER_PROGRAM": "inference.py"}))
    validate_model_request(model(Image="sklearn:latest"))


@pytest.mark.parametrize(("req", "field", "rule"), [
    (model(), "PrimaryContainer", "needs Image and/or ModelDataUrl"),
    ({"ModelName": "m"}, "PrimaryContainer", "is required"),
    ({"ModelName": "bad name", "PrimaryContainer": {"Image": "x"}}, "ModelName", "must match"),
    ({"PrimaryContainer": {"Image": "x"}}, "ModelName", "is required"),
    (model(ModelDataUrl="http://x/model.tar.gz"), "PrimaryContainer.ModelDataUrl", "s3:// or file://"),
    (model(Image="x", Environment={"A-B": "1"}), "PrimaryContainer.Environment.A-B", "must match"),
    (model(Image="x", Bogus=1), "PrimaryContainer.Bogus", "is not a field"),
    ({"ModelName": "m", "Containers": [{"Image": "x"}]}, "Containers", "not supported"),
])
def test_model_request_rules(req: dict[str, Any], field: str, rule: str) -> None:
    with pytest.raises(TransformSpecError) as err:
        validate_model_request(req)
    assert err.value.field == field
    assert rule in str(err.value)
