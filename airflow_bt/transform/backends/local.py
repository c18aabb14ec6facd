"""The ``local`` backend: the request runs on the local engine, in the calling process."""

from __future__ import annotations

from typing import Any

from airflow_bt.logs import LogLike
from airflow_bt.storage import scheme_of


def run_local(request: dict[str, Any], model_request: dict[str, Any], *, aws_conn_id: str | None,
              log: LogLike, dead_letter: bool = False, dead_letter_max_records: int = 100) -> dict[str, Any]:
    """Run ``request`` to its end and return its ``DescribeTransformJob``-shaped description.

    ``aws_conn_id`` is used only when the output goes to ``s3://``. ``dead_letter`` (opt-in):
    records the model rejects go to ``<S3OutputPath>/errors/<key>.jsonl`` instead of failing
    their object, up to ``dead_letter_max_records`` for the job
    (:mod:`airflow_bt.transform.dead_letter`).
    """
    from airflow_bt.transform.local_engine import run_transform_job

    output = request["TransformOutput"]["S3OutputPath"]
    return run_transform_job(request, model_request, aws_conn_id=aws_conn_id if scheme_of(output) == "s3" else None,
                             log=log, dead_letter=dead_letter, dead_letter_max_records=dead_letter_max_records)
