"""A link from the transform task to its job in the SageMaker console.

Same shape as the amazon provider's ``BaseAwsLink`` (``name``, ``key``, ``format_str``; the
task persists the format values to XCom), without importing it: the provider's link module
pulls in botocore, and this module is imported when DAG files are parsed.
"""

from __future__ import annotations

from typing import Any, ClassVar

from airflow_bt.compat import AIRFLOW_V3, BaseOperatorLink, Context

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
        if AIRFLOW_V3:
            from airflow.sdk.execution_time.xcom import XCom
        else:  # pragma: no cover - Airflow 2
            from airflow.models.xcom import XCom  # type: ignore[no-redef]
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
