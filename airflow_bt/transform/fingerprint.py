"""What makes two transform jobs give the same predictions: one fingerprint for both backends.

A partial retry reuses an earlier job's ``.out`` objects, and a retry attaches to an earlier job, only
when the earlier job predicts exactly what this one would. That holds when the model is the same —
its ``CreateModel`` request (image, environment, artifact URL, ...) *and* the artifact's bytes, known
by their ETag, so a ``model.tar.gz`` replaced at the same URL is another model — and the job's
prediction-changing settings are the same: its ``Environment``, ``DataProcessing`` filters and join,
the content type, split and compression of its input, ``Accept`` and ``AssembleWith`` of its output,
and the batch strategy. Job names, paths, instance counts, payload sizes and timeouts do not change a
prediction.

Both backends carry the model's identity in the model's *name* (:func:`versioned_model_name`: the
stem and 8 hex digits of :func:`model_fingerprint`), which every ``DescribeTransformJob`` shows as
``ModelName``; :func:`job_settings` reads the rest from a ``CreateTransformJob`` request or from a
``DescribeTransformJob`` response alike (unset fields and their documented defaults compare equal).
So "same predictions" is one comparison of a described earlier job with the request about to be made
(:func:`airflow_bt.transform.attempts.predicts_the_same`), on SageMaker and locally.
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


def versioned_model_name(model_name: str, model_request: Mapping[str, Any], artifact_etag: str | None = None
                         ) -> str:
    """``<model_name>-<8 hex>``: the same ``CreateModel`` config and artifact always give the same name.

    So a retry (or tomorrow's run) reuses the model it created, and a changed artifact (a new
    URL, or new bytes at the same URL: its ETag), image or environment gets a new model instead
    of silently scoring with the old one.
    """
    return f"{model_name[: 63 - 9].rstrip('-')}-{model_fingerprint(model_request, artifact_etag)[:8]}"

