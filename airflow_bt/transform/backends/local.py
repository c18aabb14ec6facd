"""The ``local`` backend: the request runs on the local engine, in the calling process."""

from __future__ import annotations

import threading
from typing import Any

from airflow_bt.logs import LogLike
from airflow_bt.storage import scheme_of


def run_local(request: dict[str, Any], model_request: dict[str, Any], *, aws_conn_id: str | None,
              log: LogLike, dead_letter: bool = False, dead_letter_max_records: int = 100,
              stop: threading.Event | None = None) -> dict[str, Any]:
    """Run ``request`` to its end and return its ``DescribeTransformJob``-shaped description.

    ``aws_conn_id`` is used only when the output goes to ``s3://``. ``dead_letter`` (opt-in):
    records the model rejects go to ``<S3OutputPath>/errors/<key>.jsonl`` instead of failing
    their object, up to ``dead_letter_max_records`` for the job
    (:mod:`airflow_bt.transform.dead_letter`). ``stop``: setting it (from any thread) ends the
    job within about a second, ``TransformJobStatus="Stopped"``
    (:func:`~airflow_bt.transform.local_engine.run_transform_job`).
    """
    from airflow_bt.transform.local_engine import run_transform_job

    output = request["TransformOutput"]["S3OutputPath"]
    return run_transform_job(request, model_request, aws_conn_id=aws_conn_id if scheme_of(output) == "s3" else None,
                             log=log, dead_letter=dead_letter, dead_letter_max_records=dead_letter_max_records,
                             stop=stop)
