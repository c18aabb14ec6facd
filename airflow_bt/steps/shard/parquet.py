"""Parquet input: record batches streamed into text shards for the container, and typed rows for publish.

Each object is read through the storage layer (:meth:`Storage.open_ranged`: ranged GETs on ``s3://``)
with :meth:`pyarrow.parquet.ParquetFile.iter_batches`, :data:`BATCH_ROWS` rows at a time with buffered
column-chunk reads, so memory does not grow with row-group or file size. Every batch goes two ways:

- the columns sent to the model (``input.columns``, in that order; default all) become shard text in
  the container's content type: header-less CSV (``pyarrow.csv``: strings quoted, nulls empty) or
  JSON Lines;
- the whole typed row goes to ``<shard prefix>.rows/part-NNNNN.arrows`` (an Arrow IPC stream, lz4:
  ~5x as fast to write and read back as Parquet), beside the shard of the same records, which the
  publish step joins the predictions onto: the published rows keep every input column with its
  original type, whatever the model was sent.

Timestamps with a time zone are sent as their UTC wall time (``2026-06-24 01:02:03.000000``): pyarrow
formats zoned timestamps ~15x slower, and the zone is the same for the whole column anyway.

All objects of a partition must share one schema; a mismatch names both objects and the fields.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import json
import time
from dataclasses import dataclass, field
from typing import Any

from airflow_bt.logs import LogLike
from airflow_bt.steps.shard.common import ShardInputError
from airflow_bt.steps.shard.sink import _ShardSink
from airflow_bt.storage.base import ObjectInfo, Storage
from airflow_bt.storage.uris import join_uri

#: Rows per record batch read (and per row group of the scratch rows files).
BATCH_ROWS = 32 * 1024
_READ_BUFFER = 1024 * 1024  # buffered column-chunk reads: a row group is not read whole
#: The typed rows beside each shard: an Arrow IPC stream (read back with ``pyarrow.ipc.open_stream``).
ROWS_EXTENSION = ".arrows"


def rows_prefix(shard_prefix: str) -> str:
    """Where the typed rows of each shard go: ``<shard prefix>.rows/``, a sibling the manifest never lists."""
    return shard_prefix.rstrip("/") + ".rows/"


@dataclass(frozen=True)
class ParquetInputs:
    """What the footers of a partition's Parquet objects say: one schema, rows per object, columns sent."""

    schema: Any  # pyarrow.Schema
    rows: list[int]
    columns: list[str]
    data_bytes: int  # uncompressed bytes of the columns sent: what the shards are planned on

    def describe(self) -> list[dict[str, str]]:
        return [{"name": f.name, "type": str(f.type)} for f in self.schema]


def _schema_difference(first: Any, other: Any) -> str:
    mine = {f.name: f for f in first}
    theirs = {f.name: f for f in other}
    parts = [f"{name!r} only in the first" for name in mine if name not in theirs]
    parts += [f"{name!r} only in this one" for name in theirs if name not in mine]
    parts += [f"{name!r} is {theirs[name].type} here but {mine[name].type} there"
              for name in mine if name in theirs and not mine[name].equals(theirs[name])]
    if not parts and first.names != other.names:
        parts.append(f"the columns are in another order ({other.names} vs {first.names})")
    return "; ".join(parts) or "field metadata differs"


def inspect_parquet(store: Storage, objects: list[ObjectInfo], columns: list[str] | None) -> ParquetInputs:
    """Read every object's footer: one schema for all (else :class:`ShardInputError` naming both files)."""
    import pyarrow.parquet as pq

    schema: Any = None
    first_uri = ""
    rows: list[int] = []
    sizes: dict[str, int] = {}
    for obj in objects:
        with store.open_ranged(obj) as stream:
            try:
                meta = pq.ParquetFile(stream).metadata
            except Exception as exc:  # pyarrow raises ArrowInvalid/OSError for a file that is not Parquet
                raise ShardInputError(f"{obj.uri}: not a readable Parquet file ({type(exc).__name__}: {exc})") from None
        found = meta.schema.to_arrow_schema().remove_metadata()
        if schema is None:
            schema, first_uri = found, obj.uri
        elif not found.equals(schema):
            raise ShardInputError(
                f"{obj.uri}: its schema differs from {first_uri}: {_schema_difference(schema, found)}; all files "
                "of a partition must share one schema (re-export them alike, or cast before writing)")
        rows.append(meta.num_rows)
        for group in range(meta.num_row_groups):
            chunk_group = meta.row_group(group)
            for index in range(chunk_group.num_columns):
                chunk = chunk_group.column(index)
                name = chunk.path_in_schema.split(".", 1)[0]
                sizes[name] = sizes.get(name, 0) + int(chunk.total_uncompressed_size)
    sent = _columns_sent(schema, columns, first_uri)
    return ParquetInputs(schema, rows, sent, sum(sizes.get(name, 0) for name in sent))


def _columns_sent(schema: Any, columns: list[str] | None, uri: str) -> list[str]:
    if not columns:
        return list(schema.names)
    missing = [c for c in columns if c not in schema.names]
    if missing:
        raise ShardInputError(f"input.columns names {missing}, which {uri} does not have; its columns are "
                              f"{schema.names}")
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:
        raise ShardInputError(f"input.columns names {repeated} more than once")
    return list(columns)


def _json_value(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, (dt.date, dt.datetime, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    raise TypeError(f"cannot send a {type(value).__name__} to the model as JSON")


@dataclass
class ParquetSharder:
    """Streams Parquet objects into the shards (records cut every ``rows_per_shard``) and their typed rows."""

    store: Storage
    sink: _ShardSink
    inputs: ParquetInputs
    shard_format: str
    rows_per_shard: int
    max_record_bytes: int | None
    logger: LogLike
    started: float = field(default_factory=time.monotonic)
    rows_uris: list[str] = field(default_factory=list)
    _rows_stack: contextlib.ExitStack | None = None
    _rows_writer: Any = None
    _last_log: float = 0.0

    def read(self, obj: ObjectInfo, index: int) -> int:
        """Shard one object; returns its record count."""
        import pyarrow.parquet as pq

        done = 0
        with self.store.open_ranged(obj) as stream:
            reader = pq.ParquetFile(stream, buffer_size=_READ_BUFFER, pre_buffer=False)
            for batch in reader.iter_batches(batch_size=BATCH_ROWS, use_threads=False):
                self._check_text(batch, obj.uri, done)
                self._write(batch)
                done += batch.num_rows
                self._log_progress()
        return done

    def _write(self, batch: Any) -> None:
        start = 0
        while start < batch.num_rows:
            if self.sink.records >= self.rows_per_shard:
                self.cut()
            take = min(batch.num_rows - start, self.rows_per_shard - self.sink.records)
            piece = batch.slice(start, take)
            self._rows(piece)
            self.sink.write(self._encode(piece.select(self.inputs.columns)), take)
            start += take

    def _rows(self, piece: Any) -> None:
        import pyarrow as pa

        if self._rows_writer is None:
            uri = join_uri(rows_prefix(self.sink.prefix), f"part-{len(self.sink.written):05d}{ROWS_EXTENSION}")
            stack = contextlib.ExitStack()
            out = stack.enter_context(self.store.open_write(uri, durable=False))
            options = pa.ipc.IpcWriteOptions(compression="lz4")
            self._rows_writer = stack.enter_context(pa.ipc.new_stream(out, self.inputs.schema, options=options))
            self._rows_stack = stack
            self.rows_uris.append(uri)
        self._rows_writer.write_batch(piece)

    def cut(self) -> None:
        """End the shard and its rows file together."""
        self.sink.cut()
        stack, self._rows_stack, self._rows_writer = self._rows_stack, None, None
        if stack is not None:
            stack.close()

    def abort(self) -> None:
        stack, self._rows_stack, self._rows_writer = self._rows_stack, None, None
        if stack is not None:
            stack.__exit__(RuntimeError, RuntimeError("shard step failed"), None)

    def _encode(self, sent: Any) -> bytes | memoryview:
        if self.shard_format == "jsonl":
            return b"".join(json.dumps(row, default=_json_value, separators=(",", ":")).encode() + b"\n"
                            for row in sent.to_pylist())
        import pyarrow as pa
        import pyarrow.csv as pacsv

        zoned = [i for i, f in enumerate(sent.schema) if pa.types.is_timestamp(f.type) and f.type.tz]
        for index in zoned:  # the UTC wall time: the instants the column stores, formatted without a zone
            column = sent.column(index)
            sent = sent.set_column(index, sent.schema.field(index).name, column.cast(pa.timestamp(column.type.unit)))
        buffer = pa.BufferOutputStream()
        pacsv.write_csv(sent, buffer, write_options=pacsv.WriteOptions(include_header=False))
        return memoryview(buffer.getvalue())

    def _check_text(self, batch: Any, uri: str, done: int) -> None:
        """A CSV shard cannot carry a newline inside a value (Batch Transform splits records at every newline),
        and no record may be longer than the payload limit."""
        import pyarrow as pa
        import pyarrow.compute as pc

        sent = batch.select(self.inputs.columns)
        if self.shard_format == "csv":
            for name, column in zip(sent.schema.names, sent.columns, strict=True):
                if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
                    continue
                hits = pc.or_(pc.match_substring(column, "\n"), pc.match_substring(column, "\r"))
                if pc.any(hits).as_py():
                    row = done + int(pc.index(hits, True).as_py()) + 1
                    raise ShardInputError(
                        f"{uri} row {row}: column {name!r} holds a line break, which a CSV shard cannot carry (Batch "
                        "Transform splits records at every newline); leave the column out of `input.columns` (it is "
                        "still published) or set `shard.format: jsonl`")
        if self.max_record_bytes and sent.nbytes > self.max_record_bytes:
            self._check_lengths(sent, uri, done)

    def _check_lengths(self, sent: Any, uri: str, done: int) -> None:
        import numpy as np

        data = bytes(self._encode(sent))
        ends = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 0x0A)
        lengths = np.diff(ends, prepend=-1)
        longest = int(np.argmax(lengths))
        assert self.max_record_bytes is not None
        if int(lengths[longest]) > self.max_record_bytes:
            raise ShardInputError(
                f"{uri} row {done + longest + 1}: the record is {int(lengths[longest])} bytes as "
                f"{self.shard_format.upper()}, over the payload limit of {self.max_record_bytes} bytes "
                "(transform.max_payload_mb); leave wide columns out of `input.columns`")

    def _log_progress(self) -> None:
        now = time.monotonic()
        if now - self._last_log >= 5:
            self._last_log = now
            done = self.sink.total_records
            self.logger.info("sharded %d of %d rows (%.0f rows/s), shard %d", done, sum(self.inputs.rows),
                             done / max(now - self.started, 1e-9), len(self.sink.written) + 1)
