"""Links from the transform task to its job in the SageMaker console and to its logs in CloudWatch.

Same shape as the amazon provider's ``BaseAwsLink`` (``name``, ``key``, ``format_str``; the
task persists the format values to XCom), without importing it. Measured with ``python -X importtime``
(provider 9.39, Airflow 3.3.2 and 2.11.2): importing ``airflow.providers.amazon.aws.links.base_aws``
after Airflow costs only 3-6 ms now, but it imports ``botocore`` and ``botocore.exceptions`` (via
``aws.utils.suppress``), and this module is imported whenever a DAG file is parsed, where our
parse-time rule keeps botocore out (tests/integration/test_dag_folder.py). The XCom lookup uses
``airflow.providers.common.compat.sdk`` (0-1 ms, nothing heavy) instead of our own version switch.
"""

from __future__ import annotations

from typing import Any, ClassVar

from airflow_bt.compat import BaseOperatorLink, Context

_DOMAINS = {"aws": "aws.amazon.com", "aws-cn": "amazonaws.cn", "aws-us-gov": "amazonaws-us-gov.com"}


class TransformJobLink(BaseOperatorLink):
    """The transform job's page in the SageMaker console (empty until the task created or found a job)."""

    name: ClassVar[str] = "SageMaker transform job"
    key: ClassVar[str] = "airflow_bt_sagemaker_transform_job"
    format_str: ClassVar[str] = (
        "https://console.{aws_domain}/sagemaker/home?region={region_name}#/transform-jobs/{job_name}"
    )

    def format_link(self, **values: Any) -> str:
        try:
            return self.format_str.format(**values) if values.get("aws_domain") else ""
        except KeyError:
            return ""

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        from airflow.providers.common.compat.sdk import XCom

        try:
            values = XCom.get_value(key=self.key, ti_key=ti_key)
        except Exception:
            return ""
        return self.format_link(**values) if isinstance(values, dict) else ""

    @classmethod
    def persist(cls, context: Context, *, region_name: str | None, aws_partition: str | None, job_name: str
                ) -> None:
        """Store the link's values in the task instance's XCom."""
        from urllib.parse import quote

        context["ti"].xcom_push(key=cls.key, value={
            "region_name": region_name,
            "aws_domain": _DOMAINS.get(aws_partition or "aws"),
            "job_name": quote(job_name, safe=""),
        })


class TransformJobLogsLink(TransformJobLink):
    """The job's log streams in the CloudWatch console: log group ``/aws/sagemaker/TransformJobs``, streams
    ``<job name>/...`` (one per instance). Stored with the console link's values."""

    name: ClassVar[str] = "CloudWatch logs of the transform job"
    key: ClassVar[str] = "airflow_bt_sagemaker_transform_job_logs"
    format_str: ClassVar[str] = (
        "https://console.{aws_domain}/cloudwatch/home?region={region_name}#logsV2:log-groups/log-group/"
        "$252Faws$252Fsagemaker$252FTransformJobs$3FlogStreamNameFilter$3D{job_name}$252F"
    )

