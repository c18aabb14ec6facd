"""Wait for a SageMaker transform job to end, e.g. after ``BatchTransformOperator(wait_for_completion=False)``."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.configuration import conf

from airflow_bt.compat import AirflowException, AirflowFailException, BaseSensorOperator, Context
from airflow_bt.hooks.transform_job import AwsTransformJobParams
from airflow_bt.transform.status import TransformJobStatus


class TransformJobSensor(AwsTransformJobParams, BaseSensorOperator):
    """Succeeds when the transform job is ``Completed``; fails when it is ``Failed`` or ``Stopped``.

    Unlike the amazon provider's ``SageMakerTransformSensor``, ``Stopped`` is a failure (the job's
    output is incomplete). A job that ended badly will not recover, so that failure skips retries.
    Returns ``{"job_name", "job_arn", "status", "output_uri"}``.

    :param job_name: the transform job, e.g. ``"{{ ti.xcom_pull(task_ids='transform')['job_name'] }}"``.
    :param aws_conn_id: the AWS connection (its ``sagemaker`` endpoint may be ``airflow-bt local-sagemaker``).
    :param region_name: AWS region (default: the connection's).
    :param verify: whether to verify SSL certificates.
    :param botocore_config: botocore client configuration.
    :param deferrable: wait on the triggerer (default ``[operators] default_deferrable``); the trigger's
        polling budget is the sensor's ``timeout``.
    """

    template_fields: Sequence[str] = ("job_name", *AwsTransformJobParams.aws_template_fields)
    ui_color = "#fdf2e8"

    def __init__(
        self,
        *,
        job_name: str,
        aws_conn_id: str | None = "aws_default",
        region_name: str | None = None,
        verify: bool | str | None = None,
        botocore_config: dict[str, Any] | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.job_name = job_name
        self.set_aws_params(aws_conn_id, region_name, verify, botocore_config)
        self.deferrable = deferrable
        self._summary: dict[str, Any] | None = None

    def _check(self, description: dict[str, Any]) -> bool:
        status = TransformJobStatus.of(description)
        if not status.terminal:
            self.log.info("transform job %s is %s", self.job_name, status.value)
            return False
        if status.failure:
            raise AirflowFailException(f"transform job {self.job_name} ended {status.value}: "
                                       f"{description.get('FailureReason') or 'stopped before it finished'}")
        self._summary = {
            "job_name": description["TransformJobName"],
            "job_arn": description.get("TransformJobArn"),
            "status": status.value,
            "output_uri": description.get("TransformOutput", {}).get("S3OutputPath"),
        }
        self.log.info("transform job %s is %s", self.job_name, status.value)
        return True

    def poke(self, context: Context) -> bool:
        return self._check(dict(self.transform_hook.describe(self.job_name)))

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            super().execute(context)
            return self._summary
        if self.poke(context):
            return self._summary
        from airflow_bt.triggers.transform_job import TransformJobTrigger

        timeout = float(self.timeout) if self.timeout else None
        self.defer(
            trigger=TransformJobTrigger(self.job_name, **self.aws_params(), poll_interval=float(self.poke_interval),
                                        deadline=time.time() + timeout if timeout else None),
            method_name="execute_complete",
            timeout=timedelta(seconds=timeout + 2 * float(self.poke_interval) + 60) if timeout else None,
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        """Resume after the trigger fired: the event's status decides."""
        if not isinstance(event, dict) or "status" not in event:
            raise AirflowException(f"transform trigger sent an unexpected event: {event!r}")
        if event["status"] == "timeout":
            raise AirflowException(f"{event.get('message')} (the sensor's timeout)")
        if event["status"] == "error":
            raise AirflowException(f"waiting for transform job {self.job_name} failed: {event.get('message')}")
        if not self._check(dict(self.transform_hook.describe(self.job_name))):
            raise AirflowException(f"trigger reported {event['status']} but transform job {self.job_name} is "
                                   "still running")
        return self._summary
