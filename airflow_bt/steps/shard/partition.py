"""The shard step itself, :func:`shard_partition`, in three phases: plan the shards (list and measure
the inputs, count the shards), read every object into them, then write the manifest and the summary.

The step's block size and limits live here, where they are read (tests patch them here):
:data:`BLOCK_BYTES`, :data:`NUMPY_MIN_BYTES`, :data:`MAX_SHARD_BYTES`.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import sys
import time
import zlib
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from airflow_bt.faults import failpoint
from airflow_bt.logs import LogLike
from airflow_bt.steps.input_checks import BAD_RECORD_MODES, BOM, VALIDATION_MODES, RecordRules
from airflow_bt.steps.shard.common import FORMATS, ShardInputError
from airflow_bt.steps.shard.inputs import _check_header, _data_sizes, _header_line, _open_object, list_inputs
from airflow_bt.steps.shard.parquet import ParquetInputs, ParquetSharder, inspect_parquet, rows_prefix
from airflow_bt.steps.shard.quarantine import _BadRecords
from airflow_bt.steps.shard.reader import _Block, _ObjectReader
from airflow_bt.steps.shard.sink import _ShardSink
from airflow_bt.storage.base import ObjectInfo, Storage

BLOCK_BYTES = 4 * 1024 * 1024
#: Import numpy for counting only for partitions at least this big: its import costs ~50-100 ms
#: and ~15 MB, its counting saves ~0.16 ms per MB over ``bytearray.replace``. An already imported
#: numpy is always used.
NUMPY_MIN_BYTES = 512 * 1024 * 1024
#: No shard is bigger than this (plus one record, itself at most ``_MAX_LINE``): shards are
#: written with one create-only S3 PUT, which takes at most 5 GiB. Bigger partitions get more
#: shards than ``max_shards``, with a warning.
MAX_SHARD_BYTES = 4 * 1024**3
log = logging.getLogger("airflow_bt.steps.shard")  # the step's logger, named as before the step became a package


@dataclass(frozen=True)
class _Plan:
    """What the plan phase found: the inputs, their format and sizes, and how many shards to make."""

    objects: list[ObjectInfo]
    fmt: str  # of the shards: csv or jsonl
    stored_bytes: int  # as listed
    total_bytes: int  # as read: ``.gz`` objects decompressed; for Parquet the columns sent, uncompressed
    count: int
    input_format: str  # csv, jsonl or parquet
    parquet: ParquetInputs | None = None

    @property
    def extension(self) -> str:
        return ".csv" if self.fmt == "csv" else ".jsonl"


@dataclass
class _Run:
    """One run of the step as the read phase goes: where records go, and what it has read so far."""

    store: Storage
    plan: _Plan
    sink: _ShardSink
    rules: RecordRules
    errors: _BadRecords
    reader: _ObjectReader
    logger: LogLike
    started: float
    header: bytes | None = None
    header_source: str = ""
    inputs: list[dict[str, Any]] = field(default_factory=list)


def shard_partition(
    store: Storage,
    input_prefix: str,
    shard_prefix: str,
    manifest_uri: str,
    summary_uri: str,
    *,
    data_format: str = "auto",
    columns: list[str] | None = None,
    shard_format: str | None = None,
    target_shard_mb: float = 64.0,
    min_shards: int = 1,
    max_shards: int = 1000,
    max_record_bytes: int | None = None,
    validation: str = "standard",
    on_bad_record: str = "fail",
    errors_uri: str | None = None,
    max_bad_records: int = 1000,
    logger: LogLike | None = None,
) -> dict[str, Any]:
    """Shard every data object under ``input_prefix`` into ``shard_prefix/part-NNNNN.<ext>``.

    The number of shards is ``max(min_shards, ceil(total bytes / target_shard_mb))``, at most
    ``max_shards``. Writes a SageMaker ``ManifestFile`` listing the shards to ``manifest_uri`` and,
    last, a JSON summary (header, formats, per-input and per-shard record counts) to
    ``summary_uri``; returns that summary.

    Parquet input (``data_format="parquet"``, or ``auto`` with ``.parquet`` keys) is sharded into
    ``shard_format`` (``csv``, header-less, or ``jsonl``) of the ``columns`` sent to the model (default
    all, in file order), cut every ``ceil(rows / N)`` records; each shard's typed rows, every column,
    go beside it to ``<shard_prefix>.rows/`` for the publish step (:mod:`.parquet`).

    Every record is checked (:mod:`airflow_bt.steps.input_checks`; ``max_record_bytes`` is the
    transform's payload limit). A bad record fails the step with :class:`ShardInputError` naming
    the object, line, byte offset and problem (``on_bad_record="fail"``), or is written with its
    reason to ``errors_uri`` (``"quarantine"``; more than ``max_bad_records`` fail the step). A
    corrupt gzip stream, a header that differs between objects, or no objects at all always fail.
    """
    logger = logger or log
    started = time.monotonic()
    quarantine = _check_modes(validation, on_bad_record, errors_uri)
    plan = _plan(store, input_prefix, data_format, columns, shard_format, target_shard_mb, min_shards, max_shards,
                 logger)
    sink = _ShardSink(store, shard_prefix, plan.extension, max(1, math.ceil(plan.total_bytes / plan.count)))
    rules = RecordRules(plan.fmt, max_record_bytes=max_record_bytes or None, validation=validation,
                        quarantine=quarantine)
    errors = _BadRecords(store, errors_uri or "", quarantine, int(max_bad_records))
    logger.info("sharding %d object(s), %.1f MB of %s%s, into up to %d shard(s) of ~%.1f MB under %s (validation "
                "%s, bad records: %s)", len(plan.objects), plan.total_bytes / 1e6,
                plan.fmt if plan.input_format == plan.fmt else f"{plan.input_format} (as {plan.fmt} shards)",
                f" ({plan.stored_bytes / 1e6:.1f} MB stored)" if plan.stored_bytes != plan.total_bytes else "",
                plan.count, sink.target_bytes / 1e6, shard_prefix, validation, on_bad_record)

    # two buffers: one is read and counted while the other one's pieces are being written
    use_numpy = "numpy" in sys.modules or plan.total_bytes >= NUMPY_MIN_BYTES
    reader = _ObjectReader(sink, [_Block(bytearray(BLOCK_BYTES), use_numpy) for _ in range(2)], rules, errors,
                           logger, started, plan.total_bytes)
    run = _Run(store, plan, sink, rules, errors, reader, logger, started)
    if plan.parquet is not None:
        _read_all_parquet(run, plan.parquet, max_record_bytes or None)
    else:
        _read_all(run)
    return _finish(run, input_prefix, shard_prefix, manifest_uri, summary_uri, errors_uri)


def _check_modes(validation: str, on_bad_record: str, errors_uri: str | None) -> bool:
    """Check the validation and bad-record modes; returns whether bad records are quarantined."""
    if validation not in VALIDATION_MODES:
        raise ShardInputError(f"validation must be one of {', '.join(VALIDATION_MODES)}; got {validation!r}")
    if on_bad_record not in BAD_RECORD_MODES:
        raise ShardInputError(f"on_bad_record must be one of {', '.join(BAD_RECORD_MODES)}; got {on_bad_record!r}")
    quarantine = on_bad_record == "quarantine"
    if quarantine and not errors_uri:
        raise ValueError("on_bad_record='quarantine' needs an errors_uri")
    return quarantine


# --- plan ---------------------------------------------------------------------------------------


def _plan(store: Storage, input_prefix: str, data_format: str, columns: list[str] | None, shard_format: str | None,
          target_shard_mb: float, min_shards: int, max_shards: int, logger: LogLike) -> _Plan:
    """List the partition's data objects, measure them, and count the shards to make."""
    objects, input_format = list_inputs(store, input_prefix, data_format)
    stored_bytes = sum(obj.size for obj in objects)
    if shard_format is not None and shard_format not in FORMATS:
        raise ShardInputError(f"shard.format must be one of {', '.join(FORMATS)}; got {shard_format!r}")
    parquet = None
    if input_format == "parquet":
        parquet = inspect_parquet(store, objects, columns)
        fmt, total_bytes = shard_format or "csv", parquet.data_bytes
    else:
        if columns:
            raise ShardInputError(f"input.columns applies to Parquet input; {input_prefix} holds {input_format} "
                                  "(send fewer columns of text input with transform.input_filter)")
        if shard_format not in (None, input_format):
            raise ShardInputError(f"shard.format {shard_format!r} applies to Parquet input; {input_format} input is "
                                  "sharded as it is")
        fmt, total_bytes = input_format, sum(_data_sizes(store, objects, BLOCK_BYTES))
    count = _shard_count(total_bytes, target_shard_mb, int(min_shards), int(max_shards), logger)
    return _Plan(objects, fmt, stored_bytes, total_bytes, count, input_format, parquet)


def _shard_count(total_bytes: int, target_shard_mb: float, min_shards: int, max_shards: int,
                 logger: LogLike) -> int:
    """``max(min_shards, ceil(total / target))`` shards, at most ``max_shards``, unless a shard would then
    be bigger than :data:`MAX_SHARD_BYTES`."""
    count = max(min_shards, math.ceil(total_bytes / max(1.0, target_shard_mb * 1024 * 1024)))
    count = max(1, min(count, max_shards))
    needed = math.ceil(total_bytes / MAX_SHARD_BYTES)
    if needed > count:
        logger.warning("%.1f GB in %d shard(s) would make shards over %.1f GiB, which one S3 PUT cannot write: "
                       "making %d shards (over shard.max_shards %d, or shard.target_shard_mb %s is too big)",
                       total_bytes / 1e9, count, MAX_SHARD_BYTES / 1024**3, needed, max_shards, target_shard_mb)
        count = needed
    return count


# --- read ---------------------------------------------------------------------------------------


def _read_all(run: _Run) -> None:
    """Read every object into the shards and commit them; on any failure nothing more becomes visible."""
    try:
        for index, obj in enumerate(run.plan.objects, start=1):
            _read_object(run, index, obj)
        run.sink.finish()
        run.errors.finish()
    except BaseException:
        run.sink.abort()
        run.errors.abort()
        raise


def _read_all_parquet(run: _Run, inputs: ParquetInputs, max_record_bytes: int | None) -> None:
    """Read every Parquet object into the shards and their rows files, cut every ``ceil(rows / N)`` records."""
    total = sum(inputs.rows)
    sharder = ParquetSharder(run.store, run.sink, inputs, run.plan.fmt, max(1, math.ceil(total / run.plan.count)),
                             max_record_bytes, run.logger, run.started)
    try:
        for index, obj in enumerate(run.plan.objects, start=1):
            records = sharder.read(obj, index)
            run.inputs.append({"uri": obj.uri, "size": obj.size, "etag": obj.etag, "records": records})
            run.logger.info("object %d of %d: %s, %d rows", index, len(run.plan.objects), obj.key, records)
        sharder.cut()
        run.sink.finish()
    except BaseException:
        sharder.abort()
        run.sink.abort()
        raise
    for shard, uri in zip(run.sink.written, sharder.rows_uris, strict=True):
        shard["rows_uri"] = uri


def _read_object(run: _Run, index: int, obj: ObjectInfo) -> None:
    """Read one object into the shards and record what it held in ``run.inputs``."""
    sink, errors, reader = run.sink, run.errors, run.reader
    records_before, bad_before, blank_before = sink.total_records, errors.count, reader.blank
    reader.line, reader.offset = 1, 0
    try:
        with _open_object(run.store, obj) as stream:
            if run.plan.fmt == "csv":
                if not _read_csv(run, obj, stream):
                    return  # empty: recorded in run.inputs already
            else:
                _read_jsonl(run, obj, stream)
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise ShardInputError(
            f"{obj.uri}: corrupt gzip data after {reader.offset} decompressed bytes (line {reader.line}): "
            f"{type(exc).__name__}: {exc}; re-export the object (a damaged compressed stream has no "
            "record boundaries to recover, so quarantine does not apply)"
        ) from None
    records = sink.total_records - records_before
    bad = errors.count - bad_before
    blank = reader.blank - blank_before
    run.inputs.append({"uri": obj.uri, "size": obj.size, "etag": obj.etag, "records": records,
                       **({"bad_records": bad} if bad else {}), **({"blank_lines": blank} if blank else {})})
    run.logger.info("object %d of %d: %s, %d records%s", index, len(run.plan.objects), obj.key, records,
                    f", {bad} bad record(s) quarantined" if bad else "")


def _read_csv(run: _Run, obj: ObjectInfo, stream: BinaryIO) -> bool:
    """Read a CSV object: its header, which must be the partition's, then its rows.

    Returns False, having recorded the object in ``run.inputs``, when it holds no header (nor rows).
    """
    reader = run.reader
    line, offset, number, blank = _header_line(stream, obj.uri, run.logger)
    reader.blank += blank
    reader.line, reader.offset = number, offset
    if not line:
        run.logger.warning("%s is empty (no header, no rows%s); skipping it", obj.uri,
                           f"; {blank} blank line(s)" if blank else "")
        run.inputs.append({"uri": obj.uri, "size": obj.size, "etag": obj.etag, "records": 0,
                           **({"blank_lines": blank} if blank else {})})
        return False
    _accept_header(run, obj.uri, _check_header(obj.uri, line, number), number)
    reader.read(stream, obj.uri, first_line=number + 1, offset=offset + len(line), carry=b"")
    return True


def _accept_header(run: _Run, uri: str, header: bytes, number: int) -> None:
    """The first object's header becomes the partition's; every other object must repeat it."""
    if run.header is None:
        run.header, run.header_source = header, uri
        run.rules.set_header(header)
    elif header != run.header:
        raise ShardInputError(
            f"{uri} line {number}: header {header.decode(errors='replace')!r} differs "
            f"from {run.header.decode(errors='replace')!r} in {run.header_source}; all input files of a "
            "partition must share one header (quarantine does not apply to headers)"
        )


def _read_jsonl(run: _Run, obj: ObjectInfo, stream: BinaryIO) -> None:
    """Read a JSON Lines object, less a leading byte order mark."""
    carry = stream.read(len(BOM))
    if carry == BOM:
        run.logger.info("%s starts with a UTF-8 byte order mark; it is dropped", obj.uri)
    run.reader.read(stream, obj.uri, first_line=1, offset=len(BOM) if carry == BOM else 0,
                    carry=b"" if carry == BOM else carry)


# --- finish -------------------------------------------------------------------------------------


def _finish(run: _Run, input_prefix: str, shard_prefix: str, manifest_uri: str, summary_uri: str,
            errors_uri: str | None) -> dict[str, Any]:
    """Write the manifest, then the summary (last: it marks the step done), log the outcome; returns the summary."""
    shards = run.sink.written
    manifest: list[Any] = [{"prefix": shard_prefix}, *[s["key"] for s in shards]]
    run.store.put_bytes(manifest_uri, json.dumps(manifest, indent=1).encode())
    failpoint("shard.before_summary", shard_prefix)
    seconds = time.monotonic() - run.started
    records = sum(s["records"] for s in shards)
    summary = _summary(run, input_prefix, shard_prefix, manifest_uri, summary_uri, errors_uri, seconds)
    run.store.put_bytes(summary_uri, json.dumps(summary, indent=1).encode())
    failpoint("shard.before_return", summary_uri)
    errors, blank = run.errors, run.reader.blank
    if errors.count:
        run.logger.warning("%d bad record(s) quarantined to %s (shard.on_bad_record: quarantine); first: %s",
                           errors.count, errors_uri, errors.first)
    if blank:
        run.logger.info("skipped %d blank line(s)", blank)
    run.logger.info("sharded %d records from %d object(s) into %d shard(s) in %.2f s (%.0f records/s)",
                    records, len(run.plan.objects), len(shards), seconds, records / seconds if seconds else 0.0)
    return summary


def _summary(run: _Run, input_prefix: str, shard_prefix: str, manifest_uri: str, summary_uri: str,
             errors_uri: str | None, seconds: float) -> dict[str, Any]:
    """The step's JSON summary: format, header, per-input and per-shard record counts, sizes, time."""
    plan, shards = run.plan, run.sink.written
    typed = {} if plan.parquet is None else {
        "columns": plan.parquet.columns,
        "schema": plan.parquet.describe(),
        "rows_prefix": rows_prefix(shard_prefix),
    }
    return {
        "format": plan.fmt,
        "input_format": plan.input_format,
        **typed,
        "content_type": FORMATS[plan.fmt],
        "header": run.header.decode() if run.header is not None else None,
        "input_prefix": input_prefix,
        "inputs": run.inputs,
        "shard_prefix": shard_prefix,
        "manifest_uri": manifest_uri,
        "summary_uri": summary_uri,
        "shards": shards,
        "records": sum(s["records"] for s in shards),
        "bad_records": run.errors.count,
        "errors_uri": errors_uri if run.errors.count else None,
        "blank_lines": run.reader.blank,
        "bytes": plan.stored_bytes,
        "data_bytes": plan.total_bytes,
        "target_shard_bytes": run.sink.target_bytes,
        "seconds": round(seconds, 3),
    }
