"""Build the one request shape every backend takes: SageMaker ``CreateTransformJob`` / ``CreateModel``.

Values may arrive as Jinja-rendered strings; they are cast back to the API's types here.
"""

from __future__ import annotations

from typing import Any


def _int(name: str, value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a whole number, got {value!r}") from None


def build_transform_request(
    *,
    job_name: str,
    model_name: str,
    input_uri: str,
    output_uri: str,
    input_is_manifest: bool = True,
    content_type: str = "text/csv",
    accept: str = "text/csv",
    split_type: str = "Line",
    compression_type: str = "None",
    assemble_with: str = "Line",
    instance_type: str = "ml.m5.xlarge",
    instance_count: int | str = 1,
    batch_strategy: str | None = "MultiRecord",
    max_payload_mb: int | str | None = 6,
    max_concurrent_transforms: int | str | None = None,
    environment: dict[str, str] | None = None,
    data_processing: dict[str, str] | None = None,
    model_client_config: dict[str, Any] | None = None,
    tags: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A ``CreateTransformJob`` request; unset optional knobs are left out, as the API expects."""
    request: dict[str, Any] = {
        "TransformJobName": job_name,
        "ModelName": model_name,
        "TransformInput": {
            "DataSource": {
                "S3DataSource": {
                    "S3DataType": "ManifestFile" if input_is_manifest else "S3Prefix",
                    "S3Uri": input_uri,
                }
            },
            "ContentType": content_type,
            "SplitType": split_type,
            "CompressionType": compression_type,
        },
        "TransformOutput": {"S3OutputPath": output_uri, "Accept": accept, "AssembleWith": assemble_with},
        "TransformResources": {
            "InstanceType": instance_type,
            "InstanceCount": _int("instance_count", instance_count),
        },
    }
    if batch_strategy:
        request["BatchStrategy"] = batch_strategy
    if max_payload_mb not in (None, ""):
        request["MaxPayloadInMB"] = _int("max_payload_mb", max_payload_mb)
    if max_concurrent_transforms not in (None, ""):
        request["MaxConcurrentTransforms"] = _int("max_concurrent_transforms", max_concurrent_transforms)
    if environment:
        request["Environment"] = {str(k): str(v) for k, v in environment.items()}
    if data_processing:
        request["DataProcessing"] = dict(data_processing)
    if model_client_config:
        request["ModelClientConfig"] = {k: _int(k, v) for k, v in model_client_config.items()}
    if tags:
        request["Tags"] = [{"Key": k, "Value": str(v)} for k, v in tags.items()]
    return request


def build_model_request(
    *,
    model_name: str,
    model_data_url: str | None,
    image: str,
    environment: dict[str, str] | None = None,
    execution_role_arn: str | None = None,
) -> dict[str, Any]:
    """A ``CreateModel`` request for a single-container model."""
    container: dict[str, Any] = {"Image": image}
    if model_data_url:
        container["ModelDataUrl"] = model_data_url
    if environment:
        container["Environment"] = {str(k): str(v) for k, v in environment.items()}
    request: dict[str, Any] = {"ModelName": model_name, "PrimaryContainer": container}
    if execution_role_arn:
        request["ExecutionRoleArn"] = execution_role_arn
    return request
