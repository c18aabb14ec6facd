"""What makes two transform jobs give the same predictions: one fingerprint for both backends.

A partial retry reuses an earlier job's ``.out`` objects only when the earlier job would have
predicted exactly what this one will. That holds when the model is the same — its ``CreateModel``
request (image, environment, artifact URL, ...) *and* the artifact's bytes, known by their ETag, so
a ``model.tar.gz`` replaced at the same URL is another model — and the job's prediction-changing
settings are the same: its ``Environment``, ``DataProcessing`` filters and join, the content type,
split and compression of its input, ``Accept`` and ``AssembleWith`` of its output, and the batch
strategy. Job names, paths, instance counts, payload sizes and timeouts do not change a prediction.

:func:`job_settings` reads those settings from a ``CreateTransformJob`` request or from a
``DescribeTransformJob`` response alike (unset fields and their documented defaults compare equal),
so the SageMaker backend can compare a described earlier job with the request it is about to make.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

#: DataProcessing as SageMaker applies it when a field is unset.
_DATA_PROCESSING_DEFAULTS = {"InputFilter": "$", "OutputFilter": "$", "JoinSource": "None"}


def _digest(doc: Any) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def model_fingerprint(model_request: Mapping[str, Any], artifact_etag: str | None) -> str:
    """The model's identity: its ``CreateModel`` request (less its name and tags) and the artifact's ETag."""
    config = {k: v for k, v in model_request.items() if k not in ("ModelName", "Tags")}
    return _digest({"model": config, "artifact_etag": artifact_etag})


def job_settings(job: Mapping[str, Any]) -> dict[str, Any]:
    """The settings of a transform job request (or description) that change what it predicts."""
    tin = job.get("TransformInput") or {}
    tout = job.get("TransformOutput") or {}
    processing = {**_DATA_PROCESSING_DEFAULTS, **(job.get("DataProcessing") or {})}
    return {
        "Environment": dict(job.get("Environment") or {}),
        "DataProcessing": processing,
        "BatchStrategy": job.get("BatchStrategy"),
        "ContentType": tin.get("ContentType"),
        "SplitType": tin.get("SplitType") or "None",
        "CompressionType": tin.get("CompressionType") or "None",
        "Accept": tout.get("Accept"),
        "AssembleWith": tout.get("AssembleWith") or "None",
    }


def prediction_fingerprint(model: str, job: Mapping[str, Any]) -> str:
    """One hash of everything that changes a prediction: the model's fingerprint and the job's settings."""
    return _digest({"model": model, "job": job_settings(job)})
