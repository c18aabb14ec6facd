"""The request shapes every backend takes, checked before anything runs.

:func:`validate_transform_request` checks a SageMaker ``CreateTransformJob`` request and
:func:`validate_model_request` a ``CreateModel`` request against the API's constraints
(names, enums, ranges, required fields, unknown keys), plus two local extensions:
``file://`` URIs are accepted wherever the API takes ``s3://``, and
``TransformResources.InstanceType`` may be left out (the local engine ignores it).

Numbers must already be ``int`` (``"2"`` and ``True`` are refused): the operator layer
casts templated values before it builds the request.

Cross-field rules: ``MaxConcurrentTransforms x MaxPayloadInMB <= 100``; ``BatchStrategy``
needs a ``SplitType`` other than ``None``; ``DataProcessing`` filters must be in the JSONPath
subset (:mod:`airflow_bt.records.jsonpath`), read CSV (index paths only), JSON or JSON Lines
records split by ``Line`` (or whole ``application/json`` documents), and ``JoinSource=Input``
needs ``Accept`` = ``ContentType`` and ``AssembleWith`` = ``SplitType``. Every error names the
field and the rule.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from airflow_bt.records import (
    BATCH_STRATEGIES,
    COMPRESSION_TYPES,
    FILTER_TYPES,
    SPLIT_TYPES,
    JsonPath,
    JsonPathSyntaxError,
    record_format,
)
from airflow_bt.records.dataprocessing import media_type

NAME_RE = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
NAME_MAX = 63
ENV_KEY_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]{0,1023}$")
INSTANCE_TYPE_RE = re.compile(r"^(ml\.[a-z0-9.\-]+|local|local_gpu)$")
URI_SCHEMES = ("s3://", "file://")
KMS_KEY_RE = re.compile(r"^[a-zA-Z0-9:/_-]*$")
#: A model package's name, or its ARN (a versioned package: ``.../model-package/<group>/<version>``).
MODEL_PACKAGE_RE = re.compile(r"^(arn:aws[a-z\-]*:sagemaker:[a-z0-9\-]*:[0-9]{12}:[a-z\-]*/)?"
                              r"([a-zA-Z0-9]([a-zA-Z0-9-]){0,62})(?<!-)(/[0-9]{1,5})?$")

ASSEMBLE_WITH = ("None", "Line")
S3_DATA_TYPES = ("S3Prefix", "ManifestFile")
JOIN_SOURCES = ("None", "Input")

_TRANSFORM_KEYS = {
    "TransformJobName", "ModelName", "MaxConcurrentTransforms", "ModelClientConfig", "MaxPayloadInMB",
    "BatchStrategy", "Environment", "TransformInput", "TransformOutput", "DataCaptureConfig",
    "TransformResources", "DataProcessing", "Tags", "ExperimentConfig",
}
_MODEL_KEYS = {
    "ModelName", "PrimaryContainer", "Containers", "InferenceExecutionConfig", "ExecutionRoleArn", "Tags",
    "VpcConfig", "EnableNetworkIsolation",
}
_CONTAINER_KEYS = {
    "ContainerHostname", "Image", "ImageConfig", "Mode", "ModelDataUrl", "ModelDataSource",
    "AdditionalModelDataSources", "Environment", "ModelPackageName", "InferenceSpecificationName",
    "MultiModelConfig",
}


class TransformSpecError(ValueError):
    """A request breaks an API constraint; ``field`` is its path (``TransformResources.InstanceCount``)."""

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _mapping(value: Any, field: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise TransformSpecError(field, f"must be a mapping, got {_describe(value)}")
    return value


def _keys(obj: Mapping[str, Any], field: str, allowed: set[str], required: tuple[str, ...] = ()) -> None:
    prefix = f"{field}." if field else ""
    for key in required:
        if obj.get(key) is None:
            raise TransformSpecError(f"{prefix}{key}", "is required")
    unknown = sorted(str(k) for k in obj if k not in allowed)
    if unknown:
        raise TransformSpecError(f"{prefix}{unknown[0]}", "is not a field of this request; "
                                                          f"expected one of {', '.join(sorted(allowed))}")


def _int(obj: Mapping[str, Any], key: str, field: str, lo: int, hi: int | None = None) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    path = f"{field}.{key}" if field else key
    rule = f"must be an integer >= {lo}" if hi is None else f"must be an integer from {lo} to {hi}"
    if isinstance(value, bool) or not isinstance(value, int):
        raise TransformSpecError(path, f"{rule}, got {_describe(value)}; cast it before building the request")
    if value < lo or (hi is not None and value > hi):
        raise TransformSpecError(path, f"{rule}, got {value}")
    return value


def _str(obj: Mapping[str, Any], key: str, field: str, *, max_len: int | None = None,
         choices: tuple[str, ...] | None = None, pattern: re.Pattern[str] | None = None) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    path = f"{field}.{key}" if field else key
    if not isinstance(value, str):
        raise TransformSpecError(path, f"must be a string, got {_describe(value)}")
    if choices is not None and value not in choices:
        raise TransformSpecError(path, f"must be one of {', '.join(choices)}, got {value!r}")
    if max_len is not None and len(value) > max_len:
        raise TransformSpecError(path, f"must be at most {max_len} characters, got {len(value)}")
    if pattern is not None and not pattern.match(value):
        raise TransformSpecError(path, f"must match {pattern.pattern}, got {value!r}")
    return value


def _uri(obj: Mapping[str, Any], key: str, field: str) -> str | None:
    value = _str(obj, key, field, max_len=1024)
    if value is not None and not value.startswith(URI_SCHEMES):
        raise TransformSpecError(f"{field}.{key}", f"must be an s3:// or file:// URI, got {value!r}")
    if value is not None and value.startswith("file://") and not value.startswith("file:///"):
        raise TransformSpecError(f"{field}.{key}",
                                 f"file:// URIs must be absolute (file:///path), got {value!r}")
    return value


def _environment(obj: Mapping[str, Any], key: str, field: str, max_entries: int, max_value: int) -> None:
    env = obj.get(key)
    if env is None:
        return
    path = f"{field}.{key}" if field else key
    env = _mapping(env, path)
    if len(env) > max_entries:
        raise TransformSpecError(path, f"must have at most {max_entries} entries, got {len(env)}")
    for name, value in env.items():
        if not isinstance(name, str) or not ENV_KEY_RE.match(name):
            raise TransformSpecError(f"{path}.{name}", f"variable names must match {ENV_KEY_RE.pattern}")
        if not isinstance(value, str):
            raise TransformSpecError(f"{path}.{name}", f"must be a string, got {_describe(value)}")
        if len(value) > max_value:
            raise TransformSpecError(f"{path}.{name}",
                                     f"must be at most {max_value} characters, got {len(value)}")


def _tags(req: Mapping[str, Any]) -> None:
    tags = req.get("Tags")
    if tags is None:
        return
    if not isinstance(tags, list) or len(tags) > 50:
        raise TransformSpecError("Tags", "must be a list of at most 50 {Key, Value} mappings")
    for i, tag in enumerate(tags):
        tag = _mapping(tag, f"Tags[{i}]")
        _keys(tag, f"Tags[{i}]", {"Key", "Value"}, ("Key",))
        _str(tag, "Key", f"Tags[{i}]", max_len=128)
        _str(tag, "Value", f"Tags[{i}]", max_len=256)


def _filter(dp: Mapping[str, Any], key: str) -> JsonPath:
    text = _str(dp, key, "DataProcessing", max_len=63)
    try:
        return JsonPath.parse(text or "$")
    except JsonPathSyntaxError as exc:
        raise TransformSpecError(f"DataProcessing.{key}", f"is not a supported JSONPath: {exc}") from None


def _data_processing(req: Mapping[str, Any], tin: Mapping[str, Any], tout: Mapping[str, Any]) -> None:
    """Filters parse; the formats they read are CSV or JSON; a join keeps formats and framing."""
    dp = _mapping(req["DataProcessing"], "DataProcessing")
    _keys(dp, "DataProcessing", {"InputFilter", "OutputFilter", "JoinSource"})
    in_filter, out_filter = _filter(dp, "InputFilter"), _filter(dp, "OutputFilter")
    join = _str(dp, "JoinSource", "DataProcessing", choices=JOIN_SOURCES) == "Input"
    content_type, accept = tin.get("ContentType"), tout.get("Accept")
    split, assemble = tin.get("SplitType") or "None", tout.get("AssembleWith") or "None"
    types = ", ".join(FILTER_TYPES)
    if join:
        if record_format(content_type) is None:
            raise TransformSpecError("TransformInput.ContentType", f"must be one of {types} with JoinSource=Input, "
                                                                   f"got {content_type!r}")
        if media_type(accept) != media_type(content_type):
            raise TransformSpecError("TransformOutput.Accept", f"must equal TransformInput.ContentType "
                                                               f"({content_type!r}) with JoinSource=Input, "
                                                               f"got {accept!r}")
        if assemble != split:
            raise TransformSpecError("TransformOutput.AssembleWith", f"must equal TransformInput.SplitType "
                                                                     f"({split}) with JoinSource=Input, "
                                                                     f"got {assemble}")
    checks = [("InputFilter", in_filter, "TransformInput.ContentType", content_type),
              ("OutputFilter", out_filter, "TransformOutput.Accept", content_type if join else accept)]
    for key, path, field, media in checks:
        if path.is_root and not (join and key == "OutputFilter"):
            continue
        fmt = record_format(media)
        if fmt is None:
            raise TransformSpecError(field, f"must be one of {types} for DataProcessing.{key}, got {media!r}")
        if fmt == "csv" and not path.index_only:
            raise TransformSpecError(f"DataProcessing.{key}", f"CSV rows are arrays: only index paths such as "
                                                              f"$[1:] or $[0,-1] apply, got {path.text!r}")
        json_doc = media_type(media) == "application/json"
        if split != "Line" and not (json_doc and split == "None"):
            raise TransformSpecError("TransformInput.SplitType",
                                     f"must be Line for DataProcessing with {media!r} records "
                                     f"(or None for whole application/json documents), got {split}")


def validate_transform_request(req: Mapping[str, Any]) -> None:
    """Raise :class:`TransformSpecError` unless ``req`` is a valid ``CreateTransformJob`` request."""
    req = _mapping(req, "CreateTransformJob request")
    _keys(req, "", _TRANSFORM_KEYS,
          ("TransformJobName", "ModelName", "TransformInput", "TransformOutput", "TransformResources"))
    _str(req, "TransformJobName", "", max_len=NAME_MAX, pattern=NAME_RE)
    _str(req, "ModelName", "", max_len=NAME_MAX, pattern=NAME_RE)

    tin = _mapping(req["TransformInput"], "TransformInput")
    _keys(tin, "TransformInput", {"DataSource", "ContentType", "CompressionType", "SplitType"},
          ("DataSource",))
    ds = _mapping(tin["DataSource"], "TransformInput.DataSource")
    _keys(ds, "TransformInput.DataSource", {"S3DataSource"}, ("S3DataSource",))
    s3ds = _mapping(ds["S3DataSource"], "TransformInput.DataSource.S3DataSource")
    path = "TransformInput.DataSource.S3DataSource"
    _keys(s3ds, path, {"S3DataType", "S3Uri"}, ("S3DataType", "S3Uri"))
    _str(s3ds, "S3DataType", path, choices=S3_DATA_TYPES)
    _uri(s3ds, "S3Uri", path)
    _str(tin, "ContentType", "TransformInput", max_len=256)
    _str(tin, "CompressionType", "TransformInput", choices=COMPRESSION_TYPES)
    _str(tin, "SplitType", "TransformInput", choices=SPLIT_TYPES)

    tout = _mapping(req["TransformOutput"], "TransformOutput")
    _keys(tout, "TransformOutput", {"S3OutputPath", "Accept", "AssembleWith", "KmsKeyId"}, ("S3OutputPath",))
    _uri(tout, "S3OutputPath", "TransformOutput")
    _str(tout, "Accept", "TransformOutput", max_len=256)
    _str(tout, "AssembleWith", "TransformOutput", choices=ASSEMBLE_WITH)
    _str(tout, "KmsKeyId", "TransformOutput", max_len=2048)

    res = _mapping(req["TransformResources"], "TransformResources")
    _keys(res, "TransformResources",
          {"InstanceType", "InstanceCount", "VolumeKmsKeyId", "TransformAmiVersion"}, ("InstanceCount",))
    _int(res, "InstanceCount", "TransformResources", 1)
    _str(res, "InstanceType", "TransformResources", pattern=INSTANCE_TYPE_RE)
    _str(res, "VolumeKmsKeyId", "TransformResources", max_len=2048)
    _str(res, "TransformAmiVersion", "TransformResources", max_len=63)

    if _str(req, "BatchStrategy", "", choices=BATCH_STRATEGIES) and (tin.get("SplitType") or "None") == "None":
        raise TransformSpecError("BatchStrategy", "needs TransformInput.SplitType Line, RecordIO or TFRecord "
                                                  f"(SplitType None sends each object whole), got "
                                                  f"BatchStrategy={req['BatchStrategy']!r} with SplitType "
                                                  f"{tin.get('SplitType') or 'unset'}")
    payload = _int(req, "MaxPayloadInMB", "", 0, 100)
    concurrent = _int(req, "MaxConcurrentTransforms", "", 0)
    if payload is not None and concurrent is not None and concurrent * payload > 100:
        raise TransformSpecError("MaxConcurrentTransforms",
                                 f"MaxConcurrentTransforms * MaxPayloadInMB must be <= 100, "
                                 f"got {concurrent} * {payload} = {concurrent * payload}")
    _environment(req, "Environment", "", 16, 10240)

    if req.get("ModelClientConfig") is not None:
        mcc = _mapping(req["ModelClientConfig"], "ModelClientConfig")
        _keys(mcc, "ModelClientConfig", {"InvocationsTimeoutInSeconds", "InvocationsMaxRetries"})
        _int(mcc, "InvocationsTimeoutInSeconds", "ModelClientConfig", 1, 3600)
        _int(mcc, "InvocationsMaxRetries", "ModelClientConfig", 0, 3)

    if req.get("DataProcessing") is not None:
        _data_processing(req, tin, tout)
    if req.get("DataCaptureConfig") is not None:
        capture = _mapping(req["DataCaptureConfig"], "DataCaptureConfig")
        _keys(capture, "DataCaptureConfig", {"DestinationS3Uri", "KmsKeyId", "GenerateInferenceId"},
              ("DestinationS3Uri",))
        _uri(capture, "DestinationS3Uri", "DataCaptureConfig")
        _str(capture, "KmsKeyId", "DataCaptureConfig", max_len=2048, pattern=KMS_KEY_RE)
        if capture.get("GenerateInferenceId") is not None and not isinstance(capture["GenerateInferenceId"], bool):
            raise TransformSpecError("DataCaptureConfig.GenerateInferenceId", "must be a boolean")
    if req.get("ExperimentConfig") is not None:
        _mapping(req["ExperimentConfig"], "ExperimentConfig")
    _tags(req)


def validate_model_request(req: Mapping[str, Any]) -> None:
    """Raise :class:`TransformSpecError` unless ``req`` is a valid ``CreateModel`` request.

    Only ``PrimaryContainer`` models are accepted (multi-container ``Containers`` are not);
    the container needs ``Image`` and/or ``ModelDataUrl``, or else a ``ModelPackageName`` (a Model
    Registry package, which names both).
    """
    req = _mapping(req, "CreateModel request")
    _keys(req, "", _MODEL_KEYS, ("ModelName",))
    _str(req, "ModelName", "", max_len=NAME_MAX, pattern=NAME_RE)
    if req.get("Containers") is not None:
        raise TransformSpecError("Containers",
                                 "multi-container models are not supported; use PrimaryContainer")
    if req.get("PrimaryContainer") is None:
        raise TransformSpecError("PrimaryContainer", "is required")
    pc = _mapping(req["PrimaryContainer"], "PrimaryContainer")
    _keys(pc, "PrimaryContainer", _CONTAINER_KEYS)
    _str(pc, "Image", "PrimaryContainer", max_len=255)
    _uri(pc, "ModelDataUrl", "PrimaryContainer")
    if _str(pc, "ModelPackageName", "PrimaryContainer", max_len=176, pattern=MODEL_PACKAGE_RE):
        given = [key for key in ("Image", "ModelDataUrl") if pc.get(key)]
        if given:
            raise TransformSpecError(f"PrimaryContainer.{given[0]}",
                                     "must not be set with ModelPackageName: the package names its image and "
                                     "artifact")
    elif not pc.get("Image") and not pc.get("ModelDataUrl"):
        raise TransformSpecError("PrimaryContainer", "needs Image and/or ModelDataUrl, or ModelPackageName")
    _str(pc, "Mode", "PrimaryContainer", choices=("SingleModel", "MultiModel"))
    _environment(pc, "Environment", "PrimaryContainer", 100, 1024)
    _str(req, "ExecutionRoleArn", "", max_len=2048)
    if req.get("EnableNetworkIsolation") is not None and not isinstance(req["EnableNetworkIsolation"], bool):
        raise TransformSpecError("EnableNetworkIsolation", "must be a boolean")
    _tags(req)
