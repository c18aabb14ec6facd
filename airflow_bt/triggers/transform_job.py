"""Wait for a SageMaker transform job on the triggerer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_bt.compat import AIRFLOW_V3
from airflow_bt.hooks.transform_job import AwsTransformJobParams, TransformJobHook
from airflow_bt.transform.status import TransformJobStatus, next_poll_delay, past_deadline

#: Terminal states and the event status each one becomes.
_EVENT_STATUS = {TransformJobStatus.COMPLETED: "success", TransformJobStatus.FAILED: "failed",
                 TransformJobStatus.STOPPED: "stopped"}


class TransformJobTrigger(AwsTransformJobParams, BaseTrigger):
    """Poll ``DescribeTransformJob`` until the job ends or ``deadline`` passes, then fire one event.

    Event payload: ``{"status": "success" | "failed" | "stopped" | "timeout" | "error", "job_name": ...,
    "job_status": ..., "message": ...}``. ``Stopped`` is ``"stopped"``, never success. The polling
    budget is the deadline the task computed from the timeout its user gave (none: wait until the
    job ends), not a fixed number of attempts, and it survives a triggerer restart.

    :class:`~airflow_bt.hooks.transform_job.TransformJobHook` describes the job (its async call runs the
    sync client in a worker thread: no aiobotocore needed); the poll delay follows the hook's own wait.

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
        super().__init__()  # type: ignore[no-untyped-call]
        self.job_name = job_name
        self.set_aws_params(aws_conn_id, region_name, verify, botocore_config)
        self.poll_interval = float(poll_interval)
        self.deadline = deadline

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "job_name": self.job_name,
                **self.aws_params(),
                "poll_interval": self.poll_interval,
                "deadline": self.deadline,
            },
        )

    def _hook(self) -> TransformJobHook:
        hook = self.transform_hook
        _ = hook.sagemaker  # the provider's hook and its client, built here, in the worker thread
        return hook

    def _event(self, status: str, **extra: Any) -> TriggerEvent:
        return TriggerEvent({"status": status, "job_name": self.job_name, **extra})  # type: ignore[no-untyped-call]

    async def on_kill(self) -> None:
        """Airflow 3.3+: a user marked the deferred task failed or success, or cleared it: stop the job (it
        would run on, and bill, for nobody). A triggerer restart does not call this: the job runs on and the
        restarted trigger attaches to it."""
        await self._stop_job("its deferred task was stopped by a user")

    async def _stop_job(self, why: str) -> None:
        self.log.warning("stopping transform job %s: %s", self.job_name, why)
        try:
            await asyncio.to_thread(lambda: self._hook().stop(self.job_name, self.log))
        except Exception:  # the task is gone either way; say that the job may still run
            self.log.exception("could not stop transform job %s: it may still be running", self.job_name)

    async def _stopped_by_a_user(self) -> bool:
        """Airflow 2: the trigger is cancelled alike for a user's action and a triggerer shutdown; the task
        tells them apart. Marked failed or success (the same try, now finished): a user ended it. Still
        ``deferred``: the triggerer stopped, the task will be resumed. Anything else (cleared: no state,
        scheduled, running, a later try): the task's new try attaches to this job, so it goes on."""
        ti = getattr(self, "task_instance", None)
        if ti is None:
            return False

        def state() -> tuple[Any, Any] | None:
            from airflow.models.taskinstance import TaskInstance
            from airflow.utils.session import create_session

            with create_session() as session:
                found = session.query(TaskInstance).filter_by(dag_id=ti.dag_id, task_id=ti.task_id, run_id=ti.run_id,
                                                              map_index=ti.map_index).one_or_none()
                return None if found is None else (found.state, found.try_number)

        try:
            current = await asyncio.to_thread(state)
        except Exception:  # no database here: do not stop a job on a guess
            self.log.exception("could not read the state of task %s", ti.task_id)
            return False
        if current is None:
            return False
        status, try_number = current
        ended = {"failed", "success", "skipped", "upstream_failed"}
        return str(getattr(status, "value", status)) in ended and try_number == ti.try_number

    async def run(self) -> AsyncIterator[TriggerEvent]:
        try:
            async for event in self._poll():
                yield event
        except asyncio.CancelledError:
            if not AIRFLOW_V3 and await self._stopped_by_a_user():  # Airflow 3.3+ calls on_kill instead
                await self._stop_job("its deferred task was stopped by a user")
            raise

    async def _poll(self) -> AsyncIterator[TriggerEvent]:
        try:
            hook = await asyncio.to_thread(self._hook)
        except Exception as exc:
            yield self._event("error", message=f"{type(exc).__name__}: {exc}")
            return
        last = None
        while True:
            try:
                description = await hook.async_describe(self.job_name)
            except Exception as exc:  # botocore already retried throttling and transient errors
                yield self._event("error", message=f"DescribeTransformJob failed: {type(exc).__name__}: {exc}")
                return
            status = TransformJobStatus.of(description)
            if status.terminal:
                yield self._event(_EVENT_STATUS[status], job_status=status.value,
                                  message=str(description.get("FailureReason") or status.value))
                return
            if status != last:
                self.log.info("transform job %s is %s", self.job_name, status.value)
                last = status
            if past_deadline(self.deadline):
                yield self._event("timeout", job_status=status.value,
                                  message=f"transform job {self.job_name} was still {status.value} at its deadline")
                return
            await asyncio.sleep(next_poll_delay(self.poll_interval, self.deadline))
