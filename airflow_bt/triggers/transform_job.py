"""Wait for a SageMaker transform job on the triggerer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

#: Terminal states and the event status each one becomes.
_EVENT_STATUS = {"Completed": "success", "Failed": "failed", "Stopped": "stopped"}


class TransformJobTrigger(BaseTrigger):
    """Poll ``DescribeTransformJob`` until the job ends or ``deadline`` passes, then fire one event.

    Event payload: ``{"status": "success" | "failed" | "stopped" | "timeout" | "error", "job_name": ...,
    "job_status": ..., "message": ...}``. ``Stopped`` is ``"stopped"``, never success. The polling
    budget is the deadline the task computed from the timeout its user gave (none: wait until the
    job ends), not a fixed number of attempts, and it survives a triggerer restart.

    The provider's ``SageMakerHook`` is used synchronously in a worker thread (no aiobotocore needed).

    :param job_name: the transform job to watch.
    :param aws_conn_id: the AWS connection (its ``sagemaker`` endpoint may be a local service).
    :param region_name: AWS region (default: the connection's).
    :param verify: whether to verify SSL certificates.
    :param botocore_config: botocore client configuration.
    :param poll_interval: seconds between two ``DescribeTransformJob`` calls.
    :param deadline: a ``time.time()`` value after which a ``"timeout"`` event fires (``None``: none).
    """

    def __init__(
        self,
        job_name: str,
        *,
        aws_conn_id: str | None = "aws_default",
        region_name: str | None = None,
        verify: bool | str | None = None,
        botocore_config: dict[str, Any] | None = None,
        poll_interval: float = 30.0,
        deadline: float | None = None,
    ) -> None:
        super().__init__()
        self.job_name = job_name
        self.aws_conn_id = aws_conn_id
        self.region_name = region_name
        self.verify = verify
        self.botocore_config = botocore_config
        self.poll_interval = float(poll_interval)
        self.deadline = deadline

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "job_name": self.job_name,
                "aws_conn_id": self.aws_conn_id,
                "region_name": self.region_name,
                "verify": self.verify,
                "botocore_config": self.botocore_config,
                "poll_interval": self.poll_interval,
                "deadline": self.deadline,
            },
        )

    def _hook(self) -> Any:
        from airflow.providers.amazon.aws.hooks.sagemaker import SageMakerHook

        return SageMakerHook(aws_conn_id=self.aws_conn_id, region_name=self.region_name, verify=self.verify,
                             config=self.botocore_config)

    def _event(self, status: str, **extra: Any) -> TriggerEvent:
        return TriggerEvent({"status": status, "job_name": self.job_name, **extra})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        try:
            hook = await asyncio.to_thread(self._hook)
        except Exception as exc:
            yield self._event("error", message=f"{type(exc).__name__}: {exc}")
            return
        last = None
        while True:
            try:
                description = await asyncio.to_thread(hook.describe_transform_job, self.job_name)
            except Exception as exc:  # botocore already retried throttling and transient errors
                yield self._event("error", message=f"DescribeTransformJob failed: {type(exc).__name__}: {exc}")
                return
            job_status = str(description["TransformJobStatus"])
            if job_status in _EVENT_STATUS:
                yield self._event(_EVENT_STATUS[job_status], job_status=job_status,
                                  message=str(description.get("FailureReason") or job_status))
                return
            if job_status != last:
                self.log.info("transform job %s is %s", self.job_name, job_status)
                last = job_status
            now = time.time()
            if self.deadline is not None and now >= self.deadline:
                yield self._event("timeout", job_status=job_status,
                                  message=f"transform job {self.job_name} was still {job_status} at its deadline")
                return
            delay = self.poll_interval if self.deadline is None else min(self.poll_interval, self.deadline - now)
            await asyncio.sleep(max(0.0, delay))
