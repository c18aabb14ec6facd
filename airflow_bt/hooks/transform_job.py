"""Our hook for SageMaker transform jobs: the amazon provider's ``SageMakerHook`` plus what it lacks.

The provider's hook does the talking (connection, region, credentials, ``create_transform_job`` with
its S3 input check, ``create_model``, ``describe_*``). This hook owns the rest, so that the operator,
the sensor, the trigger and the backend agree on it:

- the job states (:class:`~airflow_bt.transform.status.TransformJobStatus`; ``Stopped`` is a failure);
- "no such job" as ``None`` (:meth:`TransformJobHook.describe_or_none`), a name taken concurrently
  as "attach to it" (:meth:`~TransformJobHook.create_job`), a model that exists as "reuse it";
- the wait with a deadline (:meth:`~TransformJobHook.wait`) and its async twin for the trigger
  (:meth:`~TransformJobHook.async_describe`), both on :func:`~airflow_bt.transform.status.next_poll_delay`.

boto3, botocore and the provider's hook are imported on first use, never when a DAG file is parsed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from functools import cached_property
from typing import Any

from airflow_bt.compat import BaseHook
from airflow_bt.logs import LogLike
from airflow_bt.transform.status import JobWaitTimeout, TransformJobStatus, next_poll_delay, past_deadline

__all__ = ["JobWaitTimeout", "TransformJobHook", "TransformJobStatus", "error_code", "is_not_found"]


def error_code(exc: BaseException) -> str:
    response: dict[str, Any] = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def is_not_found(exc: BaseException) -> bool:
    """SageMaker says "no such resource" as ``ValidationException: Could not find ...`` or ``ResourceNotFound``."""
    code = error_code(exc)
    message = str(exc).lower()
    return code == "ResourceNotFound" or (code == "ValidationException" and (
        "could not find" in message or "not found" in message or "does not exist" in message))


class TransformJobHook(BaseHook):
    """Transform jobs and models on SageMaker (Amazon SageMaker, or ``airflow-bt local-sagemaker``).

    :param aws_conn_id: the AWS connection (its ``sagemaker`` endpoint may be a local service).
    :param region_name: AWS region (default: the connection's).
    :param verify: whether to verify SSL certificates.
    :param botocore_config: botocore client configuration.
    """

    conn_name_attr = "aws_conn_id"
    default_conn_name = "aws_default"
    conn_type = "aws"
    hook_name = "airflow_bt SageMaker transform jobs"

    def __init__(self, aws_conn_id: str | None = "aws_default", region_name: str | None = None,
                 verify: bool | str | None = None, botocore_config: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.aws_conn_id = aws_conn_id
        self.region_name = region_name
        self.verify = verify
        self.botocore_config = botocore_config

    @cached_property
    def sagemaker(self) -> Any:
        """The amazon provider's ``SageMakerHook`` (built on first use)."""
        from airflow.providers.amazon.aws.hooks.sagemaker import SageMakerHook

        return SageMakerHook(aws_conn_id=self.aws_conn_id, region_name=self.region_name,  # type: ignore[no-untyped-call]
                             verify=self.verify, config=self.botocore_config)

    @property
    def conn_region_name(self) -> str | None:
        return self.sagemaker.conn_region_name  # type: ignore[no-any-return]

    @property
    def conn_partition(self) -> str | None:
        return self.sagemaker.conn_partition  # type: ignore[no-any-return]

    # -- jobs -------------------------------------------------------------------------------------------

    def describe(self, job_name: str) -> dict[str, Any]:
        return dict(self.sagemaker.describe_transform_job(job_name))

    def describe_or_none(self, job_name: str) -> dict[str, Any] | None:
        """``DescribeTransformJob``, or ``None`` if there is no such job."""
        try:
            return self.describe(job_name)
        except Exception as exc:
            if is_not_found(exc):
                return None
            raise

    async def async_describe(self, job_name: str) -> dict[str, Any]:
        """:meth:`describe` for the triggerer's event loop (the sync client in a worker thread: no aiobotocore)."""
        return await asyncio.to_thread(self.describe, job_name)

    def create_job(self, request: dict[str, Any], log: LogLike) -> dict[str, Any] | None:
        """Create the job; ``None``, or the existing job's description if the name was just taken."""
        name = request["TransformJobName"]
        try:
            self.sagemaker.create_transform_job(request, wait_for_completion=False)
        except Exception as exc:
            if error_code(exc) != "ResourceInUse":
                raise
            log.info("transform job %s already exists (created concurrently): attaching to it", name)
            return self.describe_or_none(name)
        log.info("created transform job %s", name)
        return None

    def stop(self, job_name: str, log: LogLike) -> None:
        """``StopTransformJob``; a job that already ended is left as it is."""
        try:
            self.sagemaker.get_conn().stop_transform_job(TransformJobName=job_name)
        except Exception as exc:
            if error_code(exc) in ("ValidationException", "ResourceNotFound"):
                log.info("transform job %s was not stopped: %s", job_name, exc)
                return
            raise
        log.warning("asked SageMaker to stop transform job %s", job_name)

    def wait(self, job_name: str, *, check_interval: float, deadline: float | None, log: LogLike,
             sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
        """Poll until the job is terminal and return its description; :class:`JobWaitTimeout` at ``deadline``.

        ``deadline`` is a ``time.time()`` value (``None``: no limit). Status changes are logged.
        """
        last = None
        started = time.monotonic()
        while True:
            description = self.describe(job_name)
            status = TransformJobStatus.of(description)
            if status != last:
                log.info("transform job %s is %s", job_name, status.value)
                last = status
            if status.terminal:
                return description
            if past_deadline(deadline):
                raise JobWaitTimeout(f"transform job {job_name} was still {status.value} after "
                                     f"{time.monotonic() - started:.0f} s of waiting")
            sleep(next_poll_delay(check_interval, deadline))

    # -- models -----------------------------------------------------------------------------------------

    def ensure_model(self, model_request: dict[str, Any], log: LogLike) -> str:
        """Create the model unless a model of that name exists (a retry, or a run with the same config)."""
        name = str(model_request["ModelName"])
        try:
            self.sagemaker.describe_model(name)
            log.info("model %s exists: reusing it", name)
            return name
        except Exception as exc:
            if not is_not_found(exc):
                raise
        try:
            self.sagemaker.create_model(model_request)
        except Exception as exc:
            if error_code(exc) == "ValidationException" and "already exist" in str(exc).lower():
                log.info("model %s was created concurrently: reusing it", name)
                return name
            raise
        log.info("created model %s", name)
        return name


class AwsTransformJobParams:
    """The four AWS parameters the operator, the sensor and the trigger all take, and the hook they make.

    ``aws_template_fields`` are the ones a DAG may template (as in the amazon provider's operators).
    """

    aws_template_fields: tuple[str, ...] = ("aws_conn_id", "region_name", "verify")
    aws_conn_id: str | None
    region_name: str | None
    verify: bool | str | None
    botocore_config: dict[str, Any] | None

    def set_aws_params(self, aws_conn_id: str | None, region_name: str | None, verify: bool | str | None,
                       botocore_config: dict[str, Any] | None) -> None:
        self.aws_conn_id = aws_conn_id
        self.region_name = region_name
        self.verify = verify
        self.botocore_config = botocore_config

    def aws_params(self) -> dict[str, Any]:
        return {"aws_conn_id": self.aws_conn_id, "region_name": self.region_name, "verify": self.verify,
                "botocore_config": self.botocore_config}

    @cached_property
    def transform_hook(self) -> TransformJobHook:
        """The hook for these parameters (built on first use, then cached)."""
        return TransformJobHook(**self.aws_params())
