"""Starting an instance's model: the container up, ``/ping`` answered, ``/execution-parameters`` asked.

:func:`start_model` does it on a daemon thread with a time limit (``AIRFLOW_BT_START_TIMEOUT``), so a
model that never comes up fails its instance instead of hanging the job. The instance
(:mod:`airflow_bt.transform.instance`) waits for that thread with its own ``join``, which also ends
the wait when the job is stopped.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from airflow_bt.transform.plan import Knobs, resolve_knobs
from airflow_bt.transform.runtime import (
    START_TIMEOUT_ENV,
    ModelRuntime,
    ModelRuntimeError,
    batch_environment,
    start_timeout_s,
)

START_TIMEOUT_GRACE_S = 30.0

Join = Callable[[threading.Thread, float], None]


def start_model(runtime: ModelRuntime, request: Mapping[str, Any], model_request: Mapping[str, Any], knobs: Knobs,
                *, instance: int, join: Join) -> Knobs:
    """Start the container, check ``/ping``, ask ``/execution-parameters``; the knobs to run with.

    ``knobs`` are the request's (the container starts with them in its ``SAGEMAKER_*`` environment).
    Runs on a daemon thread that ``join(thread, timeout)`` waits for, so a model that never comes up
    (a ``model_fn`` that hangs) fails the instance after ``AIRFLOW_BT_START_TIMEOUT`` seconds instead of
    hanging the job; whatever ``join`` raises (the instance's stop) ends the wait at once.
    """
    env = batch_environment(
        max_payload_in_mb=knobs.max_payload_in_mb, batch_strategy=knobs.batch_strategy,
        max_concurrent_transforms=knobs.max_concurrent_transforms,
        environment=request.get("Environment"))
    outcome: list[Any] = []

    def start() -> None:
        try:
            runtime.start(env)
            if not runtime.ping():
                raise RuntimeError("the model did not answer ping")
            outcome.append(resolve_knobs(request, runtime.execution_parameters()))
        except BaseException as exc:  # reported by the waiting thread
            outcome.append(exc)

    starter = threading.Thread(target=start, name=f"bt-{instance}-start", daemon=True)
    starter.start()
    limit = start_timeout_s(model_request)
    own = getattr(runtime, "enforces_start_timeout", False)  # it fails first, with a better message
    join(starter, limit + (START_TIMEOUT_GRACE_S if own else 0.0))
    if not outcome:
        raise ModelRuntimeError(f"the model did not start within {limit:g} s ({START_TIMEOUT_ENV} in "
                                "PrimaryContainer.Environment)")
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    started: Knobs = outcome[0]
    return started
