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
    output_kms_key_id: str | None = None,
    volume_kms_key_id: str | None = None,
    data_capture_config: dict[str, Any] | None = None,
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
    if output_kms_key_id:
        request["TransformOutput"]["KmsKeyId"] = output_kms_key_id
    if volume_kms_key_id:
        request["TransformResources"]["VolumeKmsKeyId"] = volume_kms_key_id
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
    if data_capture_config:
        request["DataCaptureConfig"] = dict(data_capture_config)
    if tags:
        request["Tags"] = as_tags(tags)
    return request


def as_tags(tags: dict[str, Any]) -> list[dict[str, str]]:
    """``{"team": "risk"}`` as the API's ``[{"Key": "team", "Value": "risk"}]``."""
    return [{"Key": str(k), "Value": str(v)} for k, v in tags.items()]


def model_client_config(settings: dict[str, Any] | None) -> dict[str, int] | None:
    """``{invocations_timeout_seconds, max_retries}`` as the API's ``ModelClientConfig``."""
    if not settings:
        return None
    names = {"invocations_timeout_seconds": "InvocationsTimeoutInSeconds", "max_retries": "InvocationsMaxRetries"}
    unknown = sorted(set(settings) - set(names))
    if unknown:
        raise ValueError(f"model_client_config: unknown setting(s) {', '.join(unknown)}; "
                         f"known: {', '.join(names)}")
    return {names[k]: _int(f"model_client_config.{k}", v) for k, v in settings.items()}


def data_capture(settings: dict[str, Any] | None) -> dict[str, str] | None:
    """``{destination_s3_uri, kms_key_id}`` as the API's ``DataCaptureConfig``.

    ``generate_inference_id`` is refused: SageMaker then appends an inference id and time to every output
    record, which the publish step would read as extra prediction columns."""
    if not settings:
        return None
    names = {"destination_s3_uri": "DestinationS3Uri", "kms_key_id": "KmsKeyId"}
    if "generate_inference_id" in settings:
        raise ValueError("data_capture.generate_inference_id is not supported: SageMaker appends the inference id "
                         "and time to every output record, which publish would take for prediction columns")
    unknown = sorted(set(settings) - set(names))
    if unknown:
        raise ValueError(f"data_capture: unknown setting(s) {', '.join(unknown)}; known: {', '.join(names)}")
    if not settings.get("destination_s3_uri"):
        raise ValueError("data_capture needs destination_s3_uri (where the captured input and output go)")
    return {names[k]: str(v) for k, v in settings.items() if v not in (None, "")}


def vpc_config(settings: dict[str, Any] | None) -> dict[str, list[str]] | None:
    """``{security_group_ids, subnets}`` as the API's ``VpcConfig``."""
    if not settings:
        return None
    names = {"security_group_ids": "SecurityGroupIds", "subnets": "Subnets"}
    if set(settings) != set(names):
        raise ValueError(f"vpc_config needs exactly security_group_ids and subnets, got {sorted(settings)}")
    return {names[k]: [str(x) for x in v] for k, v in settings.items()}


def build_model_request(
    *,
    model_name: str,
    model_data_url: str | None,
    image: str | None,
    environment: dict[str, str] | None = None,
    execution_role_arn: str | None = None,
    tags: dict[str, str] | None = None,
    vpc: dict[str, Any] | None = None,
    enable_network_isolation: bool = False,
    model_package_name: str | None = None,
) -> dict[str, Any]:
    """A ``CreateModel`` request for a single-container model: from ``image`` (+ ``model_data_url``), or
    from a Model Registry package (``model_package_name``: a name or ARN, which names both)."""
    container: dict[str, Any]
    if model_package_name:
        if model_data_url:
            raise ValueError("model_package_name and model_data_url are exclusive: the model package names its "
                             "artifact and image")
        container = {"ModelPackageName": str(model_package_name)}
    else:
        if not image:
            raise ValueError("the model needs an image (with model_data_url), or a model_package_name")
        container = {"Image": image}
    if model_data_url and not model_package_name:
        container["ModelDataUrl"] = model_data_url
    if environment:
        container["Environment"] = {str(k): str(v) for k, v in environment.items()}
    request: dict[str, Any] = {"ModelName": model_name, "PrimaryContainer": container}
    if execution_role_arn:
        request["ExecutionRoleArn"] = execution_role_arn
    if vpc:
        request["VpcConfig"] = vpc_config(vpc)
    if enable_network_isolation:
        request["EnableNetworkIsolation"] = True
    if tags:
        request["Tags"] = as_tags(tags)
    return request
