"""Join the predictions onto the input rows and publish the date's new attempt, write-once."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow_bt.compat import AirflowFailException, Context, run_id, try_number
from airflow_bt.operators.base import BatchStepOperator
from airflow_bt.operators.results import ShardOutput, TransformResult
from airflow_bt.steps.checks import PredictionCheckError
from airflow_bt.steps.layout import MANIFEST_NAME, RunLayout
from airflow_bt.steps.predictions import ReconcileError
from airflow_bt.steps.publish import publish_attempt
from airflow_bt.storage.uris import join_uri
from airflow_bt.tables.iceberg import PARTITION_COLUMN


def _day(context: Context) -> Any:
    """The scored day (``ds``) as a date: the value of the table's partition column in every row."""
    import datetime as dt

    return dt.date.fromisoformat(str(context["ds"]))


class PublishPredictionsOperator(BatchStepOperator):
    """Reconcile, join and publish to ``<output_uri>/<run slug>-<try>/``, then point ``_LATEST.json`` at it.

    Every input record must have exactly one prediction, else the task fails naming the shard
    and both counts, and nothing is published. The predictions must have been made from the shard
    task's latest output (a shard task that ran again after the transform fails this task). The
    attempt's objects are written first, then ``_manifest.json``, then ``_SUCCESS``;
    ``_LATEST.json`` moves last.

    :param shards: the shard task's return value.
    :param transform: the transform task's return value.
    :param output_uri: the date's output prefix, e.g. ``<root>/output/churn/dt={{ ds }}/``.
    :param prediction_columns: the column name(s) of the model's output, appended to the input columns.
    :param output_format: the parts' format, ``csv``, ``jsonl`` or ``parquet`` (default: the input's). Parquet
        parts are typed: the input's columns with their types plus the prediction columns.
    :param schema: CSV/JSON Lines input with typed output: ``{column: type}`` for the columns to type (the rest
        are inferred from the first shard; the manifest records the schema used).
    :param prediction_types: ``{prediction column: type}`` (default ``float64``), e.g. ``{"label": "int64"}``.
    :param compression: Parquet parts: ``zstd`` (default), ``snappy`` or ``none``.
    :param checks: ``postprocess.checks`` (:mod:`airflow_bt.steps.checks`): rows per day, per prediction column
        null fraction, range, allowed values, drift against the last published day; a failed check fails the
        task before ``_SUCCESS`` (``on_check_failure: fail``) or is logged (``warn``). The statistics go to
        ``_manifest.json`` either way.
    :param table: ``publish.table``, ``{identifier: namespace.table, catalog: {pyiceberg properties}}``: after
        ``_LATEST.json`` moves, one Iceberg commit replaces the day's partition with this attempt's Parquet parts
        (registered in place; see :mod:`airflow_bt.tables`). Without ``catalog``, a ``file://`` root gets a
        SQL catalog on SQLite at ``<root>/catalog/catalog.db``.
    :param glue_table: ``publish.glue_table``, ``{database, table}``: the Glue/Hive table whose partition
        ``dt=<day>`` is pointed at this attempt (created when missing).
    :param root_uri: the data root (for the default catalog), e.g. ``{{ params.root_uri }}``.
    :param model_name: recorded in the manifest.
    :param model_data_url: recorded in the manifest.
    :param aws_conn_id: the AWS connection for ``s3://`` URIs.
    """

    template_fields: Sequence[str] = (
        "shards", "transform", "output_uri", "prediction_columns", "model_name", "model_data_url", "aws_conn_id",
        "output_format", "schema", "prediction_types", "compression", "checks", "table", "glue_table", "root_uri",
    )
    ui_color = "#eafbea"

    def __init__(
        self,
        *,
        shards: Any,
        transform: Any,
        output_uri: str,
        prediction_columns: Sequence[str] = ("prediction",),
        output_format: str | None = None,
        schema: dict[str, str] | None = None,
        prediction_types: dict[str, str] | None = None,
        compression: str = "zstd",
        checks: dict[str, Any] | None = None,
        table: dict[str, Any] | None = None,
        glue_table: dict[str, Any] | None = None,
        root_uri: str = "",
        model_name: str | None = None,
        model_data_url: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.shards = shards
        self.transform = transform
        self.output_uri = output_uri
        self.prediction_columns = prediction_columns
        self.output_format = output_format
        self.schema = schema
        self.prediction_types = prediction_types
        self.compression = compression
        self.checks = checks
        self.table = table
        self.glue_table = glue_table
        self.root_uri = root_uri
        self.model_name = model_name
        self.model_data_url = model_data_url

    def execute(self, context: Context) -> dict[str, Any]:
        shards = ShardOutput.from_xcom(self.shards)
        transform = TransformResult.from_xcom(self.transform)
        summary = self.read_shard_summary(self.shards)
        if transform.shards_summary_uri != shards.summary_uri:
            raise AirflowFailException(
                f"the transform task's predictions were made from the shards of {transform.shards_summary_uri}, but "
                f"the shard task's latest output is {shards.summary_uri} (the shard task ran again after the "
                "transform): clear the transform task together with publish, so that the new shards are scored")
        attempt = try_number(context)
        layout = RunLayout(work_root=shards.work_uri, output_root=self.output_uri, slug=shards.run_slug)
        store = self.hook.storage(self.output_uri)
        metadata = {
            "dag_id": context["dag"].dag_id,
            "run_id": run_id(context),
            "ds": str(context["ds"]),
            "try_number": attempt,
            "run_slug": layout.slug,
            "model": {"name": self.model_name, "model_data_url": self.model_data_url},
            "job_name": transform.job_name,
            "transform": transform.to_xcom(),
            "shard_seconds": summary.get("seconds"),
        }
        try:
            manifest = publish_attempt(
                store,
                summary,
                transform.prediction_prefixes,
                layout.attempt_prefix(attempt),
                layout.latest_uri,
                prediction_columns=[str(c) for c in self.prediction_columns],
                output_format=str(self.output_format) if self.output_format else None,
                schema={str(k): str(v) for k, v in (self.schema or {}).items()},
                prediction_types={str(k): str(v) for k, v in (self.prediction_types or {}).items()},
                compression=str(self.compression),
                checks=dict(self.checks) if self.checks else None,
                metadata=metadata,
                logger=self.log,
                partition_column=(PARTITION_COLUMN, _day(context)) if self.table else None,
            )
        except (ReconcileError, PredictionCheckError) as exc:  # a retry would find the same: fail without one
            raise AirflowFailException(str(exc)) from exc
        tables = self._follow_latest(store, layout.latest_uri, str(context["ds"]))
        return {
            "attempt_uri": manifest["attempt_prefix"],
            "manifest_uri": join_uri(manifest["attempt_prefix"], MANIFEST_NAME),
            "latest_uri": layout.latest_uri,
            "rows": manifest["rows_out"],
            "parts": len(manifest["parts"]),
            "quarantined": manifest["quarantined"],
            "rejected": manifest["rejected"],
            **({"tables": tables} if tables else {}),
        }

    def _follow_latest(self, store: Any, latest_uri: str, day: str) -> dict[str, Any]:
        """Point the day's table partition(s) at the attempt ``_LATEST.json`` names (this one, unless a later one
        completed first); what each names afterwards (and the Iceberg snapshot id), for XCom."""
        if not self.table and not self.glue_table:
            return {}
        from airflow_bt.tables.iceberg import TableCommitError
        from airflow_bt.tables.sync import follow_latest
        from airflow_bt.tables.targets import build_targets

        try:
            targets = build_targets(dict(self.table) if self.table else None,
                                    dict(self.glue_table) if self.glue_table else None,
                                    root_uri=str(self.root_uri), aws_conn_id=self.aws_conn_id, logger=self.log)
            named = follow_latest(store, latest_uri, day, targets.pointers, logger=self.log)
        except (TableCommitError, ValueError) as exc:  # a schema or a setting a retry would find the same
            raise AirflowFailException(f"publish.table / publish.glue_table: {exc}") from exc
        result: dict[str, Any] = {name: {"attempt": attempt} for name, attempt in named.items()}
        if targets.iceberg is not None and targets.iceberg.last_snapshot_id is not None:
            result[targets.iceberg.name]["snapshot_id"] = targets.iceberg.last_snapshot_id
        for name, reason in targets.skipped.items():
            result[name] = {"skipped": reason}
        return result
