"""The ``sagemaker`` backend: transform jobs on SageMaker through the transform job hook
(:class:`~airflow_bt.hooks.transform_job.TransformJobHook`).

The endpoint is Amazon SageMaker, or ``airflow-bt local-sagemaker`` when the AWS connection points
the ``sagemaker`` service there. Jobs outlive the task, so the operator may defer to the triggerer
or hand the job to a sensor.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from airflow_bt.hooks.transform_job import TransformJobHook
from airflow_bt.logs import LogLike
from airflow_bt.transform.backends.base import TransformBackend
from airflow_bt.transform.backends.job_logs import LogTail


class SageMakerBackend(TransformBackend):
    """:class:`TransformBackend` over SageMaker's API.

    :param hook: the hook of the task's AWS connection.
    :param log: where job creation, status changes and stops are logged.
    :param sleep: how the wait sleeps between two status checks (tests pass a fake).
    """

    name = "sagemaker"
    can_defer = True

    def __init__(self, hook: TransformJobHook, log: LogLike, sleep: Callable[[float], None] = time.sleep) -> None:
        self.hook = hook
        self.log = log
        self.sleep = sleep

    def ensure_model(self, model_request: dict[str, Any]) -> str:
        return self.hook.ensure_model(model_request, self.log)

    def create_job(self, request: dict[str, Any]) -> dict[str, Any] | None:
        return self.hook.create_job(request, self.log)

    def describe(self, job_name: str) -> dict[str, Any] | None:
        return self.hook.describe_or_none(job_name)

    def stop(self, job_name: str) -> None:
        self.hook.stop(job_name, self.log)

    def wait(self, job_name: str, *, check_interval: float, deadline: float | None) -> dict[str, Any]:
        return self.hook.wait(job_name, check_interval=check_interval, deadline=deadline, log=self.log,
                              sleep=self.sleep)

    def console_link(self) -> dict[str, str | None] | None:
        return {"region_name": self.hook.conn_region_name, "aws_partition": self.hook.conn_partition}

    def log_tail(self, job_name: str, limit: int) -> LogTail:
        """The job's CloudWatch Logs streams, read through the task's AWS connection (its ``logs`` endpoint)."""
        from airflow.providers.amazon.aws.hooks.logs import AwsLogsHook

        from airflow_bt.transform.backends.job_logs import cloudwatch_tail

        try:
            client = AwsLogsHook(aws_conn_id=self.hook.aws_conn_id, region_name=self.hook.region_name,
                                 verify=self.hook.verify, config=self.hook.botocore_config).conn
        except Exception as exc:
            return LogTail(note=f"no CloudWatch Logs client for connection {self.hook.aws_conn_id!r}: "
                                f"{type(exc).__name__}: {exc}")
        return cloudwatch_tail(client, job_name, limit)

    def trigger(self, job_name: str, *, poll_interval: float, deadline: float | None) -> Any:
        from airflow_bt.triggers.transform_job import TransformJobTrigger

        return TransformJobTrigger(job_name, aws_conn_id=self.hook.aws_conn_id, region_name=self.hook.region_name,
                                   verify=self.hook.verify, botocore_config=self.hook.botocore_config,
                                   poll_interval=poll_interval, deadline=deadline)
