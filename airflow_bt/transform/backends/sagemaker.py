"""The ``sagemaker`` backend: transform jobs on SageMaker through the amazon provider's ``SageMakerHook``.

The endpoint is Amazon SageMaker, or ``airflow-bt local-sagemaker`` when the AWS connection
points the ``sagemaker`` service at it. The hook does the talking (connection, region,
credentials, ``create_transform_job`` with its S3 input check, ``create_model``,
``describe_*``); this module adds what its ``check_status`` lacks:

- idempotent attempts: :func:`choose_job` finds the job an earlier try of the same run
  launched (names without the try number) and attaches to it unless it ended Failed or Stopped;
- ``Stopped`` is a failure, like ``Failed`` (:data:`FAILED`);
- a wait with a deadline after which the job is stopped (:func:`wait_for_job`, :func:`stop_job`);
- models de-duplicated by content (:func:`versioned_model_name`, :func:`ensure_model`);
- billable instance-seconds and cost (:func:`billing`).

boto3/botocore and the provider are imported by the caller (the hook); nothing here imports them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from airflow_bt.logs import LogLike
from airflow_bt.steps.naming import retry_job_name
from airflow_bt.transform.fingerprint import job_settings, model_fingerprint

NON_TERMINAL = frozenset({"InProgress", "Stopping"})
FAILED = frozenset({"Failed", "Stopped"})
COMPLETED = "Completed"


class JobWaitTimeout(Exception):
    """The job was still running when the wait's deadline passed."""


def error_code(exc: BaseException) -> str:
    response: dict[str, Any] = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def is_not_found(exc: BaseException) -> bool:
    """SageMaker says "no such resource" as ``ValidationException: Could not find ...`` or ``ResourceNotFound``."""
    code = error_code(exc)
    message = str(exc).lower()
    return code == "ResourceNotFound" or (code == "ValidationException" and (
        "could not find" in message or "not found" in message or "does not exist" in message))


def describe_or_none(hook: Any, job_name: str) -> dict[str, Any] | None:
    """``DescribeTransformJob``, or ``None`` if there is no such job."""
    try:
        return dict(hook.describe_transform_job(job_name))
    except Exception as exc:
        if is_not_found(exc):
            return None
        raise


@dataclass(frozen=True)
class JobChoice:
    """The job a try works with: an existing one to attach to (``existing``) or a new one to create."""

    name: str
    existing: dict[str, Any] | None = None


def run_job_names(base: str, try_number: int) -> list[str]:
    """The names the jobs of one run can have by ``try_number``: ``base``, then ``base-r<try>``."""
    return [base] + [retry_job_name(base, t) for t in range(2, int(try_number) + 1)]


def choose_job(hook: Any, base: str, try_number: int, log: LogLike, *, model_name: str | None = None,
               settings: dict[str, Any] | None = None) -> JobChoice:
    """Find the job an earlier try of this run launched, or name the one this try creates.

    The run's jobs are ``base`` (the first one) and ``base-r<try>`` (one per try that had to
    start over). The newest existing one wins: ``InProgress``/``Stopping``/``Completed`` is
    attached to (a retry after a crashed worker waits for it and pays once); ``Failed``/
    ``Stopped``, or a job of another model than ``model_name`` or with other prediction-changing
    ``settings`` (:func:`~airflow_bt.transform.fingerprint.job_settings`; the task was cleared after
    the config changed), means this try creates ``base-r<try>`` (never a name already taken).
    """
    for name in reversed(run_job_names(base, try_number)):
        description = describe_or_none(hook, name)
        if description is None:
            continue
        status = description["TransformJobStatus"]
        if model_name and description.get("ModelName") not in (None, model_name):
            log.info("transform job %s of an earlier try ran model %s, not %s: this try starts a new job", name,
                     description.get("ModelName"), model_name)
            break
        if settings is not None and job_settings(description) != settings:
            log.info("transform job %s of an earlier try ran with other settings (environment, filters, content "
                     "types): this try starts a new job", name)
            break
        if status in NON_TERMINAL or status == COMPLETED:
            log.info("transform job %s of an earlier try is %s: attaching to it instead of starting another",
                     name, status)
            return JobChoice(name, description)
        log.info("transform job %s of an earlier try ended %s (%s): this try starts a new job", name, status,
                 description.get("FailureReason", "no reason given"))
        break
    else:
        return JobChoice(base)
    fresh = retry_job_name(base, try_number)
    candidate, n = fresh, 2
    while describe_or_none(hook, candidate) is not None:
        candidate, n = f"{fresh}-{n}", n + 1
    return JobChoice(candidate)


def versioned_model_name(model_name: str, model_request: dict[str, Any], artifact_etag: str | None = None) -> str:
    """``<model_name>-<8 hex>``: the same ``CreateModel`` config and artifact always give the same name.

    So a retry (or tomorrow's run) reuses the model it created, and a changed artifact (a new
    URL, or new bytes at the same URL: its ETag), image or environment gets a new model instead
    of silently scoring with the old one (:func:`~airflow_bt.transform.fingerprint.model_fingerprint`).
    """
    return f"{model_name[: 63 - 9].rstrip('-')}-{model_fingerprint(model_request, artifact_etag)[:8]}"


def ensure_model(hook: Any, model_request: dict[str, Any], log: LogLike) -> str:
    """Create the model unless a model of that name exists (a retry, or a run with the same config)."""
    name = str(model_request["ModelName"])
    try:
        hook.describe_model(name)
        log.info("model %s exists: reusing it", name)
        return name
    except Exception as exc:
        if not is_not_found(exc):
            raise
    try:
        hook.create_model(model_request)
    except Exception as exc:
        if error_code(exc) == "ValidationException" and "already exist" in str(exc).lower():
            log.info("model %s was created concurrently: reusing it", name)
            return name
        raise
    log.info("created model %s", name)
    return name


def create_job(hook: Any, request: dict[str, Any], log: LogLike) -> dict[str, Any] | None:
    """Create the job; returns ``None``, or the existing job's description if the name was just taken."""
    name = request["TransformJobName"]
    try:
        hook.create_transform_job(request, wait_for_completion=False)
    except Exception as exc:
        if error_code(exc) != "ResourceInUse":
            raise
        log.info("transform job %s already exists (created concurrently): attaching to it", name)
        return describe_or_none(hook, name)
    log.info("created transform job %s", name)
    return None


def wait_for_job(
    hook: Any, job_name: str, *, check_interval: float, deadline: float | None, log: LogLike,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Poll until the job is terminal and return its description; :class:`JobWaitTimeout` at ``deadline``.

    ``deadline`` is a ``time.time()`` value (``None``: no limit). Status changes are logged.
    """
    last = None
    started = time.monotonic()
    while True:
        description = dict(hook.describe_transform_job(job_name))
        status = description["TransformJobStatus"]
        if status != last:
            log.info("transform job %s is %s", job_name, status)
            last = status
        if status not in NON_TERMINAL:
            return description
        now = time.time()
        if deadline is not None and now >= deadline:
            raise JobWaitTimeout(f"transform job {job_name} was still {status} after "
                                 f"{time.monotonic() - started:.0f} s of waiting")
        sleep(check_interval if deadline is None else max(0.0, min(check_interval, deadline - now)))


def stop_job(hook: Any, job_name: str, log: LogLike) -> None:
    """``StopTransformJob``; a job that already ended is left as it is."""
    try:
        hook.get_conn().stop_transform_job(TransformJobName=job_name)
    except Exception as exc:
        if error_code(exc) in ("ValidationException", "ResourceNotFound"):
            log.info("transform job %s was not stopped: %s", job_name, exc)
            return
        raise
    log.warning("asked SageMaker to stop transform job %s", job_name)


def _as_datetime(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


def billing(description: dict[str, Any], price_per_instance_hour: float | None) -> dict[str, Any]:
    """Billable instance-seconds (start to end, times the instance count) and, given a price, the cost."""
    start = _as_datetime(description.get("TransformStartTime"))
    end = _as_datetime(description.get("TransformEndTime"))
    instances = int(description.get("TransformResources", {}).get("InstanceCount", 1))
    seconds = (end - start).total_seconds() if start and end else 0.0
    out: dict[str, Any] = {
        "started_at": start.isoformat() if start else None,
        "ended_at": end.isoformat() if end else None,
        "seconds": round(seconds, 3),
        "instance_count": instances,
        "billable_instance_seconds": round(seconds * instances, 3),
    }
    if price_per_instance_hour is not None:
        out["price_per_instance_hour"] = price_per_instance_hour
        out["cost"] = round(seconds * instances / 3600.0 * price_per_instance_hour, 6)
    return out
