"""Shard a date partition's input into equal-size shard objects for Batch Transform."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow_bt.compat import AirflowFailException, Context, run_id, try_number
from airflow_bt.operators.base import BatchStepOperator
from airflow_bt.operators.results import ShardOutput
from airflow_bt.operators.templated import as_int, required_int, required_number
from airflow_bt.steps.layout import RunLayout
from airflow_bt.steps.naming import run_slug
from airflow_bt.steps.shard import ShardInputError, shard_partition


class ShardInputOperator(BatchStepOperator):
    """Stream every object under ``input_uri`` into shards below this attempt's own work prefix.

    The attempt writes to ``<work_uri>/<run slug>/shard-<try>/part-NNNNN.<ext>`` plus a SageMaker
    manifest (``shard-<try>.manifest``) and a summary (``shard-<try>.json``); the run slug is minted
    here, unique per attempt, and the downstream steps write beside it.

    :param input_uri: the partition's input prefix (``file://`` or ``s3://``), e.g. ``.../dt={{ ds }}/``.
    :param work_uri: the date's scratch prefix, e.g. ``<root>/work/churn/dt={{ ds }}/``.
    :param data_format: ``auto`` (from file names), ``csv`` (with a header row), ``jsonl`` or ``parquet``.
    :param columns: Parquet input: the columns sent to the model, in this order (default all); every input
        column is still published, with its type.
    :param shard_format: Parquet input: the shards' format for the container, ``csv`` (header-less, the
        default) or ``jsonl``.
    :param target_shard_mb: aim for shards of about this size.
    :param min_shards: at least this many shards (e.g. the transform's instance count).
    :param max_shards: at most this many shards.
    :param max_record_bytes: the transform's payload limit in bytes: a longer record is a bad record
        (``0``/``None``: no limit).
    :param validation: ``standard``, ``fast`` (CSV field counts left to the publish step) or ``strict``
        (every line parsed); see :mod:`airflow_bt.steps.input_checks`.
    :param on_bad_record: ``fail`` (the first bad record fails the task, naming object, line and problem)
        or ``quarantine`` (bad records go with their reasons to ``shard-<try>.errors.jsonl``, which the
        publish step copies to the attempt's ``_errors/``; the good ones are scored).
    :param max_bad_records: with ``quarantine``, more bad records than this fail the task.
    :param aws_conn_id: the AWS connection for ``s3://`` URIs.
    """

    template_fields: Sequence[str] = (
        "input_uri", "work_uri", "data_format", "target_shard_mb", "min_shards", "max_shards", "aws_conn_id",
        "max_record_bytes", "validation", "on_bad_record", "max_bad_records", "columns", "shard_format",
    )
    ui_color = "#e8f4fd"

    def __init__(
        self,
        *,
        input_uri: str,
        work_uri: str,
        data_format: str = "auto",
        columns: Sequence[str] | None = None,
        shard_format: str | None = None,
        target_shard_mb: float | str = 64,
        min_shards: int | str = 1,
        max_shards: int | str = 1000,
        max_record_bytes: int | str | None = None,
        validation: str = "standard",
        on_bad_record: str = "fail",
        max_bad_records: int | str = 1000,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.input_uri = input_uri
        self.work_uri = work_uri
        self.data_format = data_format
        self.columns = columns
        self.shard_format = shard_format
        self.target_shard_mb = target_shard_mb
        self.min_shards = min_shards
        self.max_shards = max_shards
        self.max_record_bytes = max_record_bytes
        self.validation = validation
        self.on_bad_record = on_bad_record
        self.max_bad_records = max_bad_records

    def execute(self, context: Context) -> dict[str, Any]:
        attempt = try_number(context)
        layout = RunLayout(work_root=self.work_uri, output_root="", slug=run_slug(run_id(context)))
        store = self.hook.storage(self.input_uri)
        out_store = self.hook.storage(self.work_uri)
        if type(out_store) is not type(store):
            raise AirflowFailException("input_uri and work_uri must use the same storage scheme")
        try:
            summary = shard_partition(
                store,
                self.input_uri,
                layout.step_prefix("shard", attempt),
                layout.step_file("shard", attempt, ".manifest"),
                layout.step_file("shard", attempt, ".json"),
                data_format=str(self.data_format),
                columns=[str(c) for c in self.columns] if self.columns else None,
                shard_format=str(self.shard_format) if self.shard_format else None,
                target_shard_mb=required_number("target_shard_mb", self.target_shard_mb, minimum=0.001),
                min_shards=required_int("min_shards", self.min_shards, minimum=1),
                max_shards=required_int("max_shards", self.max_shards, minimum=1),
                max_record_bytes=as_int("max_record_bytes", self.max_record_bytes) or None,
                validation=str(self.validation),
                on_bad_record=str(self.on_bad_record),
                errors_uri=layout.step_file("shard", attempt, ".errors.jsonl"),
                max_bad_records=required_int("max_bad_records", self.max_bad_records),
                logger=self.log,
            )
        except ShardInputError as exc:
            raise AirflowFailException(str(exc)) from exc  # bad input: retrying cannot fix it
        return ShardOutput(
            run_slug=layout.slug,
            work_uri=self.work_uri,
            run_prefix=layout.run_prefix,
            shard_prefix=summary["shard_prefix"],
            manifest_uri=summary["manifest_uri"],
            summary_uri=summary["summary_uri"],
            format=summary["format"],
            content_type=summary["content_type"],
            shards=len(summary["shards"]),
            records=summary["records"],
            input_objects=len(summary["inputs"]),
            bad_records=summary["bad_records"],
        ).to_xcom()
