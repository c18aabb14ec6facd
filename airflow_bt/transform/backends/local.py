"""The ``local`` backend: the request runs on the local engine, in the calling process."""

from __future__ import annotations

from typing import Any

from airflow_bt.logs import LogLike
from airflow_bt.storage import scheme_of


def run_local(request: dict[str, Any], model_request: dict[str, Any], *, aws_conn_id: str | None,
              log: LogLike) -> dict[str, Any]:
    """Run ``request`` to its end and return its ``DescribeTransformJob``-shaped description.

    ``aws_conn_id`` is used only when the output goes to ``s3://``.
    """
    from airflow_bt.transform.local_engine import run_transform_job

    output = request["TransformOutput"]["S3OutputPath"]
    return run_transform_job(request, model_request, aws_conn_id=aws_conn_id if scheme_of(output) == "s3" else None,
                             log=log)
