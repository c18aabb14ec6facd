"""Model runtimes: what serves ``/invocations`` for the local engine.

The ``CreateModel`` request's ``PrimaryContainer`` chooses one:

- ``Image`` is an ``http(s)://`` URL: the container already runs there
  (:class:`HttpContainerRuntime`);
- ``Environment`` has ``AIRFLOW_BT_SERVE_COMMAND``: the engine starts that command, waits for
  ``/ping``, and stops it at the end (:class:`ServeCommandRuntime`);
- anything else (e.g. the SageMaker scikit-learn image URI): the Python handler in
  ``ModelDataUrl``'s ``code/`` is loaded in process (:class:`PythonHandlerRuntime`), or, with
  ``isolate_handler`` (the service's policy), in a child process with the container environment only
  (:class:`IsolatedHandlerRuntime`).

>>> runtime = open_runtime({"ModelName": "m", "PrimaryContainer": {"ModelDataUrl": "file:///m/model.tar.gz"}})
>>> type(runtime).__name__
'PythonHandlerRuntime'
>>> type(open_runtime({"ModelName": "m", "PrimaryContainer": {"Image": "http://127.0.0.1:8080"}})).__name__
'HttpContainerRuntime'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow_bt.transform.runtime.artifacts import UnsafeArchiveError, fetch_model_dir, safe_extract_tar
from airflow_bt.transform.runtime.base import (
    START_TIMEOUT_ENV,
    ModelInvocationError,
    ModelRuntime,
    ModelRuntimeError,
    StorageResolver,
    batch_environment,
    start_timeout_s,
)
from airflow_bt.transform.runtime.http import HttpContainerRuntime
from airflow_bt.transform.runtime.isolated_handler import IsolatedHandlerRuntime
from airflow_bt.transform.runtime.policy import EMBEDDED, EnginePolicy, PolicyError, runtime_kind
from airflow_bt.transform.runtime.python_handler import PythonHandlerRuntime
from airflow_bt.transform.runtime.serve import SERVE_COMMAND_ENV, ServeCommandRuntime

HTTP_TIMEOUT_GRACE_S = 5.0


def open_runtime(
    model_request: Mapping[str, Any], *, storage_for: StorageResolver | None = None,
    invocation_timeout_s: float = 600.0, isolate_handler: bool = False,
) -> ModelRuntime:
    """The runtime for a ``CreateModel`` request (not started yet: call ``start(environment)``).

    ``isolate_handler``: run a Python handler in a child process that holds none of this process's
    environment (:class:`IsolatedHandlerRuntime`) rather than in this process.

    ``invocation_timeout_s`` is ``InvocationsTimeoutInSeconds``. The engine enforces it
    (:mod:`airflow_bt.transform.invoker`); HTTP runtimes get a socket timeout a little after it
    as a backstop, so the thread of an abandoned request ends too.
    """
    kind = runtime_kind(model_request)
    socket_timeout_s = invocation_timeout_s + HTTP_TIMEOUT_GRACE_S
    if kind == "http":
        return HttpContainerRuntime(model_request, timeout_s=socket_timeout_s)
    if kind == "serve":
        return ServeCommandRuntime(model_request, storage_for=storage_for, timeout_s=socket_timeout_s)
    container = model_request.get("PrimaryContainer") or {}
    if container.get("ModelDataUrl") and isolate_handler:
        return IsolatedHandlerRuntime(model_request, storage_for=storage_for, timeout_s=socket_timeout_s)
    if container.get("ModelDataUrl"):
        return PythonHandlerRuntime(model_request, storage_for=storage_for)
    raise ModelRuntimeError(
        f"model {model_request.get('ModelName')!r}: PrimaryContainer needs ModelDataUrl (a model.tar.gz with "
        f"code/inference.py), an http(s):// Image (a running container) or {SERVE_COMMAND_ENV} in its "
        "Environment (a command that serves the model)")


__all__ = [
    "EMBEDDED",
    "SERVE_COMMAND_ENV",
    "START_TIMEOUT_ENV",
    "EnginePolicy",
    "HttpContainerRuntime",
    "IsolatedHandlerRuntime",
    "ModelInvocationError",
    "ModelRuntime",
    "ModelRuntimeError",
    "PolicyError",
    "PythonHandlerRuntime",
    "ServeCommandRuntime",
    "StorageResolver",
    "UnsafeArchiveError",
    "batch_environment",
    "fetch_model_dir",
    "open_runtime",
    "runtime_kind",
    "safe_extract_tar",
    "start_timeout_s",
]
