"""Model runtimes: what serves ``/invocations`` for the local engine.

>>> runtime = open_runtime({"ModelName": "m", "PrimaryContainer": {"ModelDataUrl": "file:///m/model.tar.gz"}})
>>> type(runtime).__name__
'PythonHandlerRuntime'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow_bt.transform.runtime.artifacts import UnsafeArchiveError, fetch_model_dir, safe_extract_tar
from airflow_bt.transform.runtime.base import (
    ModelInvocationError,
    ModelRuntime,
    ModelRuntimeError,
    StorageResolver,
    batch_environment,
)
from airflow_bt.transform.runtime.python_handler import PythonHandlerRuntime


def open_runtime(
    model_request: Mapping[str, Any], *, storage_for: StorageResolver | None = None,
) -> ModelRuntime:
    """The runtime for a ``CreateModel`` request (not started yet: call ``start(environment)``).

    A model with ``PrimaryContainer.ModelDataUrl`` is served by :class:`PythonHandlerRuntime`.
    Image-only models need a container runtime, which does not exist yet.
    """
    container = model_request.get("PrimaryContainer") or {}
    if container.get("ModelDataUrl"):
        return PythonHandlerRuntime(model_request, storage_for=storage_for)
    raise ModelRuntimeError(
        f"model {model_request.get('ModelName')!r} has no PrimaryContainer.ModelDataUrl; the local engine "
        "serves Python handler models (model.tar.gz with code/inference.py) only")


__all__ = [
    "ModelInvocationError",
    "ModelRuntime",
    "ModelRuntimeError",
    "PythonHandlerRuntime",
    "StorageResolver",
    "UnsafeArchiveError",
    "batch_environment",
    "fetch_model_dir",
    "open_runtime",
    "safe_extract_tar",
]
