"""What the local engine needs from a model: the SageMaker serving-container contract, in Python.

A :class:`ModelRuntime` stands for one model container of one instance:

==========================  ==========================================
container contract          ModelRuntime
==========================  ==========================================
container start + env       :meth:`ModelRuntime.start`
``GET /ping``               :meth:`ModelRuntime.ping`
``GET /execution-parameters``  :meth:`ModelRuntime.execution_parameters`
``POST /invocations``       :meth:`ModelRuntime.invoke`
container stop              :meth:`ModelRuntime.close`
==========================  ==========================================

Implementations: :class:`~airflow_bt.transform.runtime.python_handler.PythonHandlerRuntime`
(framework-container style ``inference.py``, in process),
:class:`~airflow_bt.transform.runtime.http.HttpContainerRuntime` (a running container) and
:class:`~airflow_bt.transform.runtime.serve.ServeCommandRuntime` (a serve command the engine
starts and stops).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

from airflow_bt.storage import Storage

START_TIMEOUT_ENV = "AIRFLOW_BT_START_TIMEOUT"
"""``PrimaryContainer.Environment`` entry: seconds a model may take to start (default 600)."""
DEFAULT_START_TIMEOUT_S = 600.0

StorageResolver = Callable[[str], Storage]
"""Gives the storage that serves a URI (``file://`` or ``s3://``)."""


class ModelRuntimeError(RuntimeError):
    """The model could not be fetched, loaded, or started."""


class ModelInvocationError(RuntimeError):
    """The model failed one request (the container's non-2xx answer to ``/invocations``)."""


@runtime_checkable
class ModelRuntime(Protocol):
    """One model container. Not shared between processes; calls to :meth:`invoke` may come from
    several threads at once (``MaxConcurrentTransforms`` > 1)."""

    def start(self, environment: Mapping[str, str]) -> None:
        """Fetch the model and bring it up with the job's container ``environment``.

        ``environment`` holds the transform job's ``Environment`` and the ``SAGEMAKER_*``
        batch variables (see :func:`batch_environment`); the model's own
        ``PrimaryContainer.Environment`` is applied underneath by the runtime.
        """

    def ping(self) -> bool:
        """Whether the model is healthy (``GET /ping`` answered 200)."""

    def execution_parameters(self) -> dict[str, Any] | None:
        """The container's ``MaxConcurrentTransforms``/``MaxPayloadInMB``/``BatchStrategy``, if it has any."""

    def invoke(self, payload: bytes, content_type: str, accept: str) -> bytes:
        """Score one request body; raise on failure (a non-2xx answer)."""

    def close(self) -> None:
        """Stop the model and remove what :meth:`start` created. Safe to call twice."""


def start_timeout_s(model_request: Mapping[str, Any]) -> float:
    """How long the model may take to come up: ``AIRFLOW_BT_START_TIMEOUT`` in its environment, or 600 s."""
    env = (model_request.get("PrimaryContainer") or {}).get("Environment") or {}
    raw = env.get(START_TIMEOUT_ENV)
    if raw in (None, ""):
        return DEFAULT_START_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        raise ModelRuntimeError(f"{START_TIMEOUT_ENV} must be a number of seconds, got {raw!r}") from None
    if value <= 0:
        raise ModelRuntimeError(f"{START_TIMEOUT_ENV} must be > 0, got {raw!r}")
    return value


def batch_environment(*, max_payload_in_mb: int, batch_strategy: str, max_concurrent_transforms: int,
                      environment: Mapping[str, str] | None = None) -> dict[str, str]:
    """A transform job's container environment: its ``Environment`` and the ``SAGEMAKER_*`` variables."""
    env = dict(environment or {})
    env.update(
        SAGEMAKER_BATCH="true",
        SAGEMAKER_MAX_PAYLOAD_IN_MB=str(max_payload_in_mb),
        SAGEMAKER_BATCH_STRATEGY="SINGLE_RECORD" if batch_strategy == "SingleRecord" else "MULTI_RECORD",
        SAGEMAKER_MAX_CONCURRENT_TRANSFORMS=str(max_concurrent_transforms),
    )
    return env
