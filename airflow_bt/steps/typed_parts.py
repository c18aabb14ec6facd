"""Typed parts: the publish step for Parquet input or Parquet output, one shard at a time, in record batches.

A shard's rows come as Arrow record batches with their types: from the rows file (an Arrow IPC stream) the
shard step wrote beside the shard (Parquet input: every input column, as the files had them), or parsed from the
CSV/JSON Lines shard with one schema for the whole attempt (``postprocess.schema`` for the columns it
names, the rest inferred from the first shard and recorded in ``_manifest.json``). The predictions are
parsed into one column per name with its declared type (``postprocess.prediction_types``, default
``float64``), the records the model rejected are left out, and the batch is written as Parquet (row
groups of :data:`ROW_GROUP_ROWS`, zstd or snappy), CSV with a header, or JSON Lines.

Memory is bounded by a row group, not by the shard: batches stream from the rows, the predictions
and to the part together.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import decimal
import json
from collections.abc import Callable, Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from airflow_bt.records.arrow_types import arrow_type
from airflow_bt.steps.predictions import ReconcileError, json_prediction_values, sniffed_predictions
from airflow_bt.storage.base import Storage

OUTPUT_FORMATS = ("csv", "jsonl", "parquet")
COMPRESSIONS = ("zstd", "snappy", "none")
EXTENSIONS = {"csv": ".csv", "jsonl": ".jsonl", "parquet": ".parquet"}
#: Rows per row group of a published Parquet part (and per batch read).
ROW_GROUP_ROWS = 128 * 1024
_CSV_BLOCK = 4 * 1024 * 1024


@dataclass(frozen=True)
class TypedSettings:
    """How one attempt's parts are typed and written."""

    output_format: str
    prediction_columns: list[str]
    prediction_types: dict[str, str]
    compression: str
    schema: Any  # pyarrow.Schema of the rows (the input columns)
    schema_source: str  # parquet, postprocess.schema, inferred (or a mix, e.g. "postprocess.schema + inferred")
    #: ``(name, type, value)`` columns every row gets after the predictions, e.g. a table's partition column
    #: (``scored_date``, ``date32``, the day): a table partitioned by it reads the day from the files' statistics.
    constants: tuple[tuple[str, str, Any], ...] = ()

    def output_schema(self) -> Any:
        import pyarrow as pa

        fields = [pa.field(name, arrow_type(self.prediction_types.get(name, "float64")))
                  for name in self.prediction_columns]
        clash = [name for name in self.prediction_columns if name in self.schema.names]
        if clash:
            raise ValueError(f"prediction column(s) {clash} are input columns too; name them differently "
                             "(postprocess.prediction_columns)")
        taken = [name for name, _, _ in self.constants if name in self.schema.names or name in self.prediction_columns]
        if taken:
            raise ValueError(f"column(s) {taken} of the input or the predictions are the table's partition column; "
                             "rename them (publish.table adds that column to every row)")
        constants = [pa.field(name, arrow_type(kind), nullable=False) for name, kind, _ in self.constants]
        return pa.schema([*self.schema, *fields, *constants])

    def describe(self) -> list[dict[str, str]]:
        return [{"name": f.name, "type": str(f.type)} for f in self.output_schema()]


def rows_schema(store: Storage, summary: dict[str, Any], declared: dict[str, str]) -> tuple[Any, str]:
    """The attempt's row schema and where it came from: the Parquet files, ``postprocess.schema``, inference."""
    import pyarrow as pa

    if summary.get("input_format") == "parquet":
        return _parquet_rows_schema(store, summary), "parquet"
    first = next((s for s in summary["shards"] if s["records"]), None)
    names = _csv_names(summary) if summary["format"] == "csv" else None
    inferred = _infer_schema(store, first["uri"], summary["format"], names) if first else pa.schema([])
    if names is not None:
        unknown = sorted(set(declared) - set(names))
        if unknown:
            raise ValueError(f"postprocess.schema names {unknown}, which the input header {names} does not have")
        fields = [pa.field(name, arrow_type(declared[name]) if name in declared else
                           (inferred.field(name).type if name in inferred.names else pa.string()))
                  for name in names]
    else:
        fields = [pa.field(f.name, arrow_type(declared[f.name]) if f.name in declared else f.type) for f in inferred]
        fields += [pa.field(name, arrow_type(kind)) for name, kind in declared.items() if name not in inferred.names]
    inferred_any = any(f.name not in declared for f in fields)
    source = " + ".join(s for s, used in (("postprocess.schema", bool(declared)), ("inferred", inferred_any)) if used)
    return pa.schema(fields), source or "inferred"


def _parquet_rows_schema(store: Storage, summary: dict[str, Any]) -> Any:
    """The schema of the shards' rows files: the input files' own, every type as it was."""
    import pyarrow as pa

    first = next((s for s in summary["shards"] if s.get("rows_uri")), None)
    if first is None:  # no rows at all: the names and types the shard step recorded
        return pa.schema([pa.field(f["name"], arrow_type(f["type"])) for f in summary.get("schema", [])])
    with store.open_read(first["rows_uri"]) as stream:
        return pa.ipc.open_stream(stream).schema


def _csv_names(summary: dict[str, Any]) -> list[str]:
    import csv

    return next(csv.reader([summary.get("header") or ""]))


def _infer_schema(store: Storage, uri: str, fmt: str, names: list[str] | None) -> Any:
    """The types pyarrow infers from the first block of a shard (strings stay strings: no null inference)."""
    import pyarrow.csv as pacsv
    import pyarrow.json as pajson

    with store.open_read(uri) as stream:
        if fmt == "csv":
            reader = pacsv.open_csv(stream, read_options=pacsv.ReadOptions(column_names=names, block_size=_CSV_BLOCK),
                                    convert_options=_csv_convert(None))
        else:
            reader = pajson.open_json(stream, read_options=pajson.ReadOptions(block_size=_CSV_BLOCK))
        return reader.schema


def _csv_convert(schema: Any) -> Any:
    import pyarrow.csv as pacsv

    return pacsv.ConvertOptions(column_types=schema, strings_can_be_null=False, quoted_strings_can_be_null=False,
                                null_values=[""])


@dataclass
class _RowSource:
    """A shard's rows as typed record batches, numbered from 1."""

    store: Storage
    summary: dict[str, Any]
    shard: dict[str, Any]
    schema: Any

    def batches(self) -> Iterator[Any]:
        import pyarrow as pa
        import pyarrow.csv as pacsv
        import pyarrow.json as pajson

        if "rows_uri" in self.shard:
            with self.store.open_read(self.shard["rows_uri"]) as stream:
                yield from pa.ipc.open_stream(stream)
            return
        with self.store.open_read(self.shard["uri"]) as stream:
            if self.summary["format"] == "csv":
                reader = pacsv.open_csv(stream, read_options=pacsv.ReadOptions(column_names=self.schema.names,
                                                                               block_size=_CSV_BLOCK),
                                        convert_options=_csv_convert(self.schema))
            else:
                reader = pajson.open_json(stream, read_options=pajson.ReadOptions(block_size=_CSV_BLOCK),
                                          parse_options=pajson.ParseOptions(explicit_schema=self.schema,
                                                                            unexpected_field_behavior="error"))
            try:
                yield from reader
            except Exception as exc:  # ArrowInvalid: a value that does not fit the schema
                raise ReconcileError(
                    f"shard {self.shard['key']}: a row does not fit the schema {_schema_text(self.schema)} "
                    f"({exc}); declare the column's type in postprocess.schema (the rest is inferred from the first "
                    "shard); nothing was published") from None


def _schema_text(schema: Any) -> str:
    return ", ".join(f"{f.name}: {f.type}" for f in schema)


@dataclass
class _Predictions:
    """A shard's predictions, parsed into typed columns as many rows at a time as asked for."""

    stream: BinaryIO
    settings: TypedSettings
    shard_key: str
    _pending: list[bytes] = field(default_factory=list)
    _blocks: Iterator[list[bytes]] | None = None
    _format: str = "csv"

    def __post_init__(self) -> None:
        self._format, self._blocks = sniffed_predictions(self.stream, len(self.settings.prediction_columns),
                                                         self.shard_key)

    def take(self, count: int) -> list[Any]:
        assert self._blocks is not None
        while len(self._pending) < count:
            more = next(self._blocks, None)
            if more is None:
                raise ReconcileError(f"shard {self.shard_key}: fewer predictions than input records")
            self._pending.extend(more)
        lines, self._pending = self._pending[:count], self._pending[count:]
        return self._parse_csv(lines) if self._format == "csv" else self._parse_json(lines)

    def finish(self) -> None:
        assert self._blocks is not None
        if self._pending or next(self._blocks, None) is not None:
            raise ReconcileError(f"shard {self.shard_key}: more predictions than input records")

    def _types(self) -> list[Any]:
        return [arrow_type(self.settings.prediction_types.get(n, "float64")) for n in self.settings.prediction_columns]

    def _parse_csv(self, lines: list[bytes]) -> list[Any]:
        import pyarrow as pa
        import pyarrow.csv as pacsv

        names = self.settings.prediction_columns
        if not lines:
            return [pa.array([], kind) for kind in self._types()]
        try:
            table = pacsv.read_csv(pa.py_buffer(b"\n".join(lines) + b"\n"),
                                   read_options=pacsv.ReadOptions(column_names=names, block_size=1 << 26),
                                   convert_options=_csv_convert(dict(zip(names, self._types(), strict=True))))
        except pa.ArrowInvalid as exc:
            raise ReconcileError(f"shard {self.shard_key}: a prediction does not fit its declared type "
                                 f"(postprocess.prediction_types): {exc}") from None
        return [table.column(name).combine_chunks() for name in names]

    def _parse_json(self, lines: list[bytes]) -> list[Any]:
        import pyarrow as pa

        columns = json_prediction_values(lines, self.settings.prediction_columns)
        try:
            return [pa.array(values, kind) for values, kind in zip(columns, self._types(), strict=True)]
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise ReconcileError(f"shard {self.shard_key}: a prediction does not fit its declared type "
                                 f"(postprocess.prediction_types): {exc}") from None


def _json_default(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return str(value)  # exact: a JSON number would round it
    if isinstance(value, (dt.date, dt.datetime, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


class _PartWriter:
    """Writes joined batches in the output format; Parquet row groups are gathered to :data:`ROW_GROUP_ROWS`."""

    def __init__(self, out: BinaryIO, settings: TypedSettings) -> None:
        import pyarrow.csv as pacsv
        import pyarrow.parquet as pq

        self.out, self.fmt = out, settings.output_format
        self.schema = settings.output_schema()
        self._held: list[Any] = []
        self._rows = 0
        self._writer: Any = None
        if self.fmt == "parquet":
            codec = None if settings.compression == "none" else settings.compression
            self._writer = pq.ParquetWriter(out, self.schema, compression=codec)
        elif self.fmt == "csv":
            self._writer = pacsv.CSVWriter(out, self.schema)

    def write(self, batch: Any) -> None:
        if self.fmt == "jsonl":
            self.out.write(b"".join(json.dumps(row, default=_json_default, separators=(",", ":")).encode() + b"\n"
                                    for row in batch.to_pylist()))
        elif self.fmt == "csv":
            self._writer.write_batch(batch)
        else:
            self._held.append(batch)
            self._rows += batch.num_rows
            if self._rows >= ROW_GROUP_ROWS:
                self._flush()

    def _flush(self) -> None:
        import pyarrow as pa

        if self._held:
            self._writer.write_table(pa.Table.from_batches(self._held, self.schema), row_group_size=ROW_GROUP_ROWS)
        self._held, self._rows = [], 0

    def close(self) -> None:
        if self.fmt == "parquet":
            self._flush()
        if self._writer is not None:
            self._writer.close()

    def discard(self) -> None:
        """End the writer on a failure while ``out`` is still open (the caller throws ``out`` away): a
        writer left to the garbage collector would write its footer into a closed stream."""
        writer, self._writer, self._held = self._writer, None, []
        if writer is not None:
            with contextlib.suppress(Exception):  # the part is being thrown away; what it holds does not matter
                writer.close()


def write_typed_part(store: Storage, summary: dict[str, Any], shard: dict[str, Any], predictions_uri: str,
                     out: BinaryIO, settings: TypedSettings, skip: AbstractSet[int] = frozenset(),
                     observe: Callable[[list[Any]], None] | None = None) -> int:
    """Join one shard's typed rows and predictions into ``out``; returns the rows written. ``observe`` sees
    each batch of typed prediction columns (the publish step's statistics)."""
    import pyarrow as pa

    source = _RowSource(store, summary, shard, settings.schema)
    writer = _PartWriter(out, settings)
    first, written = 1, 0
    try:
        with store.open_read(predictions_uri) as stream:
            predictions = _Predictions(stream, settings, shard["key"])
            for batch in source.batches():
                count = batch.num_rows
                if skip and any(first <= n < first + count for n in skip):
                    batch = batch.filter(pa.array([n not in skip for n in range(first, first + count)]))
                first += count
                answers = predictions.take(batch.num_rows)
                if observe is not None:
                    observe(answers)
                constants = [pa.repeat(pa.scalar(value, writer.schema.field(name).type), batch.num_rows)
                             for name, _, value in settings.constants]
                writer.write(pa.RecordBatch.from_arrays([*batch.columns, *answers, *constants], schema=writer.schema))
                written += batch.num_rows
            predictions.finish()
        if first - 1 != shard["records"]:
            raise ReconcileError(f"shard {shard['key']}: its rows hold {first - 1} records but the shard step "
                                 f"counted {shard['records']}; nothing was published")
    except BaseException:
        writer.discard()
        raise
    writer.close()
    return written
