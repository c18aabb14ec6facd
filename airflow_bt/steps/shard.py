"""The shard step: stream a date partition's objects into N shard objects of about equal size.

CSV headers are stripped (Batch Transform does not skip them) and recorded; every input
file must carry the same header. Records keep their order: shard 0 holds the first ones.
Memory is constant in the input size: objects are copied in blocks and cut at newlines.

Sizes are decompressed sizes: a ``.gz`` object is read through once first to measure it (gzip
records the size of its last member only, modulo 4 GiB). Every shard but the last is cut at the
first newline past the target (total / N), so no shard exceeds it by more than one record, and
no shard is bigger than :data:`MAX_SHARD_BYTES`, below S3's 5 GiB limit for a single PUT.

Speed: blocks are read into two reused buffers (no fresh pages to fault in per block) and
written, and shards committed (fsync, or an upload), by one background I/O thread while the
next block is read and counted. Counting records is most of the step's CPU: it uses numpy's
vectorised compare (~8x ``bytes.count``) when numpy is already loaded or the partition is big
enough to repay importing it (:data:`NUMPY_MIN_BYTES`), else ``bytearray.replace`` (~1.7x).
"""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import math
import sys
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from airflow_bt.faults import failpoint
from airflow_bt.logs import LogLike
from airflow_bt.steps.input_checks import BAD_RECORD_MODES, BOM, VALIDATION_MODES, BadRecord, RecordRules
from airflow_bt.storage.base import ObjectInfo, Storage
from airflow_bt.storage.uris import join_uri

BLOCK_BYTES = 4 * 1024 * 1024
#: Import numpy for counting only for partitions at least this big: its import costs ~50-100 ms
#: and ~15 MB, its counting saves ~0.16 ms per MB over ``bytearray.replace``. An already imported
#: numpy is always used.
NUMPY_MIN_BYTES = 512 * 1024 * 1024
_NUMPY_MIN_RANGE = 64 * 1024  # below this, bytearray.count is as fast as the others
_MAX_LINE = 256 * 1024 * 1024  # a "line" longer than this is not line-delimited data
#: No shard is bigger than this (plus one record, itself at most ``_MAX_LINE``): shards are
#: written with one create-only S3 PUT, which takes at most 5 GiB. Bigger partitions get more
#: shards than ``max_shards``, with a warning.
MAX_SHARD_BYTES = 4 * 1024**3
FORMATS = {"csv": "text/csv", "jsonl": "application/jsonlines"}
_EXTENSIONS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}
log = logging.getLogger(__name__)


class ShardInputError(ValueError):
    """The input partition cannot be sharded as it is; the message names the object and the fix."""


def is_data_key(key: str) -> bool:
    """Markers and hidden files (``_SUCCESS``, ``.crc``) are not data."""
    name = key.rsplit("/", 1)[-1]
    return bool(name) and not name.startswith(("_", "."))


def detect_format(key: str) -> str | None:
    name = key[:-3] if key.endswith(".gz") else key
    for ext, fmt in _EXTENSIONS.items():
        if name.endswith(ext):
            return fmt
    return None


def list_inputs(store: Storage, input_prefix: str, data_format: str = "auto") -> tuple[list[ObjectInfo], str]:
    """The partition's data objects in key order, and their one format (``csv`` or ``jsonl``)."""
    objects = [obj for obj in store.list(input_prefix) if is_data_key(obj.key)]
    if not objects:
        raise ShardInputError(f"no input objects under {input_prefix} (markers like _SUCCESS do not count)")
    if data_format != "auto":
        if data_format not in FORMATS:
            raise ShardInputError(f"format must be one of auto, {', '.join(FORMATS)}; got {data_format!r}")
        return objects, data_format
    found = {obj.uri: detect_format(obj.key) for obj in objects}
    unknown = [uri for uri, fmt in found.items() if fmt is None]
    if unknown:
        raise ShardInputError(
            f"{unknown[0]}: cannot tell the format from the name (expected .csv, .jsonl, .ndjson, .json, "
            "optionally .gz); set `format: csv` or `format: jsonl` in the DAG config"
        )
    kinds = sorted({fmt for fmt in found.values() if fmt})
    if len(kinds) > 1:
        raise ShardInputError(f"{input_prefix} mixes formats {kinds}; one partition must hold one format")
    return objects, kinds[0]


@contextlib.contextmanager
def _open_object(store: Storage, obj: ObjectInfo) -> Iterator[BinaryIO]:
    with store.open_read(obj.uri) as raw:
        if obj.key.endswith(".gz"):
            with gzip.GzipFile(fileobj=raw, mode="rb") as unzipped:
                yield unzipped  # type: ignore[misc]
        else:
            yield raw


@dataclass
class _ShardSink:
    """Opens shard objects one after another; each becomes visible only when complete.

    The bookkeeping (sizes, record counts, where to cut) happens in the caller's thread; the
    I/O (opening, writing, committing a shard) runs in order on one background thread, so
    writing and committing (fsync, or an upload) overlap with reading and counting the next
    block. :meth:`write` returns the future of its write: the caller must not change the
    bytes it passed until that future is done.
    """

    store: Storage
    prefix: str
    extension: str
    target_bytes: int
    written: list[dict[str, Any]] = field(default_factory=list)
    size: int = 0
    records: int = 0
    _open: bool = False
    _io: ThreadPoolExecutor | None = None
    _pending: deque[Future[None]] = field(default_factory=deque)
    # touched by the I/O thread only
    _stack: contextlib.ExitStack | None = None
    _out: BinaryIO | None = None

    @property
    def total_records(self) -> int:
        """Records written so far, in every shard."""
        return sum(s["records"] for s in self.written) + self.records

    def room(self) -> int:
        """Bytes left before this shard should be cut at the next record boundary.

        The last shard is no exception: with exact sizes it holds what is left, at most the target;
        should an object have grown since it was listed, the step makes a shard more rather than
        one too big.
        """
        return self.target_bytes - self.size

    def write(self, piece: bytes | memoryview, records: int) -> Future[None]:
        if not self._open:
            self._submit(self._io_open, join_uri(self.prefix, self._key()))
            self._open = True
        self.size += len(piece)
        self.records += records
        return self._submit(self._io_write, piece)

    def cut(self) -> None:
        if not self._open:
            return
        key = self._key()
        self._submit(self._io_commit)
        self.written.append({"key": key, "uri": join_uri(self.prefix, key), "records": self.records,
                             "bytes": self.size})
        self._open = False
        self.size = self.records = 0

    def finish(self) -> None:
        """Cut the last shard and wait until every shard is committed (raises the first failure)."""
        self.cut()
        try:
            while self._pending:
                self._pending.popleft().result()
        finally:
            self._shutdown()

    def abort(self) -> None:
        """Wait for the I/O in flight, then drop the shard being written (nothing of it becomes visible)."""
        if self._io is not None:
            self._io.submit(self._io_abort).result()
        self._shutdown()

    def _key(self) -> str:
        return f"part-{len(self.written):05d}{self.extension}"

    def _submit(self, fn: Callable[..., None], *args: Any) -> Future[None]:
        if self._io is None:
            self._io = ThreadPoolExecutor(1, thread_name_prefix="shard-io")
        future = self._io.submit(fn, *args)
        self._pending.append(future)
        while self._pending and self._pending[0].done():  # a failed write stops the step at once
            self._pending.popleft().result()
        return future

    def _shutdown(self) -> None:
        if self._io is not None:
            self._io.shutdown(wait=True, cancel_futures=True)
            self._io = None
        self._pending.clear()

    def _io_open(self, uri: str) -> None:
        self._stack = contextlib.ExitStack()
        # Shards are scratch: a process kill cannot lose written pages, and a shard cut short by
        # an OS crash fails reconciliation (records vs predictions) before anything is published.
        self._out = self._stack.enter_context(self.store.open_write(uri, durable=False))

    def _io_write(self, piece: bytes | memoryview) -> None:
        if self._out is None:
            raise RuntimeError("the shard is not open (its open failed)")
        self._out.write(piece)

    def _io_commit(self) -> None:
        stack, self._stack, self._out = self._stack, None, None
        if stack is not None:
            stack.close()
            failpoint("shard.after_shard", self.prefix)

    def _io_abort(self) -> None:
        stack, self._stack, self._out = self._stack, None, None
        if stack is not None:
            stack.__exit__(RuntimeError, RuntimeError("shard step failed"), None)


def shard_partition(
    store: Storage,
    input_prefix: str,
    shard_prefix: str,
    manifest_uri: str,
    summary_uri: str,
    *,
    data_format: str = "auto",
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

    Every record is checked (:mod:`airflow_bt.steps.input_checks`; ``max_record_bytes`` is the
    transform's payload limit). A bad record fails the step with :class:`ShardInputError` naming
    the object, line, byte offset and problem (``on_bad_record="fail"``), or is written with its
    reason to ``errors_uri`` (``"quarantine"``; more than ``max_bad_records`` fail the step). A
    corrupt gzip stream, a header that differs between objects, or no objects at all always fail.
    """
    logger = logger or log
    started = time.monotonic()
    if validation not in VALIDATION_MODES:
        raise ShardInputError(f"validation must be one of {', '.join(VALIDATION_MODES)}; got {validation!r}")
    if on_bad_record not in BAD_RECORD_MODES:
        raise ShardInputError(f"on_bad_record must be one of {', '.join(BAD_RECORD_MODES)}; got {on_bad_record!r}")
    quarantine = on_bad_record == "quarantine"
    if quarantine and not errors_uri:
        raise ValueError("on_bad_record='quarantine' needs an errors_uri")
    objects, fmt = list_inputs(store, input_prefix, data_format)
    stored_bytes = sum(obj.size for obj in objects)
    total_bytes = sum(_data_sizes(store, objects))
    count = _shard_count(total_bytes, target_shard_mb, int(min_shards), int(max_shards), logger)
    extension = ".csv" if fmt == "csv" else ".jsonl"
    sink = _ShardSink(store, shard_prefix, extension, max(1, math.ceil(total_bytes / count)))
    rules = RecordRules(fmt, max_record_bytes=max_record_bytes or None, validation=validation,
                        quarantine=quarantine)
    errors = _BadRecords(store, errors_uri or "", quarantine, int(max_bad_records))
    logger.info("sharding %d object(s), %.1f MB of %s%s, into up to %d shard(s) of ~%.1f MB under %s (validation "
                "%s, bad records: %s)", len(objects), total_bytes / 1e6, fmt,
                f" ({stored_bytes / 1e6:.1f} MB stored)" if stored_bytes != total_bytes else "", count,
                sink.target_bytes / 1e6, shard_prefix, validation, on_bad_record)

    # two buffers: one is read and counted while the other one's pieces are being written
    use_numpy = "numpy" in sys.modules or total_bytes >= NUMPY_MIN_BYTES
    reader = _ObjectReader(sink, [_Block(bytearray(BLOCK_BYTES), use_numpy) for _ in range(2)], rules, errors,
                           logger, started, total_bytes)
    header: bytes | None = None
    header_source = ""
    inputs: list[dict[str, Any]] = []
    try:
        for index, obj in enumerate(objects, start=1):
            records_before, bad_before, blank_before = sink.total_records, errors.count, reader.blank
            reader.line, reader.offset = 1, 0
            try:
                with _open_object(store, obj) as stream:
                    carry = b""
                    if fmt == "csv":
                        line, offset, number, blank = _header_line(stream, obj.uri, logger)
                        reader.blank += blank
                        reader.line, reader.offset = number, offset
                        if not line:
                            logger.warning("%s is empty (no header, no rows%s); skipping it", obj.uri,
                                           f"; {blank} blank line(s)" if blank else "")
                            inputs.append({"uri": obj.uri, "size": obj.size, "etag": obj.etag, "records": 0,
                                           **({"blank_lines": blank} if blank else {})})
                            continue
                        this_header = _check_header(obj.uri, line, number)
                        if header is None:
                            header, header_source = this_header, obj.uri
                            rules.set_header(header)
                        elif this_header != header:
                            raise ShardInputError(
                                f"{obj.uri} line {number}: header {this_header.decode(errors='replace')!r} differs "
                                f"from {header.decode(errors='replace')!r} in {header_source}; all input files of a "
                                "partition must share one header (quarantine does not apply to headers)"
                            )
                        reader.read(stream, obj.uri, first_line=number + 1, offset=offset + len(line), carry=b"")
                    else:
                        carry = stream.read(len(BOM))
                        if carry == BOM:
                            logger.info("%s starts with a UTF-8 byte order mark; it is dropped", obj.uri)
                        reader.read(stream, obj.uri, first_line=1, offset=len(BOM) if carry == BOM else 0,
                                    carry=b"" if carry == BOM else carry)
            except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
                raise ShardInputError(
                    f"{obj.uri}: corrupt gzip data after {reader.offset} decompressed bytes (line {reader.line}): "
                    f"{type(exc).__name__}: {exc}; re-export the object (a damaged compressed stream has no "
                    "record boundaries to recover, so quarantine does not apply)"
                ) from None
            records = sink.total_records - records_before
            bad = errors.count - bad_before
            blank = reader.blank - blank_before
            inputs.append({"uri": obj.uri, "size": obj.size, "etag": obj.etag, "records": records,
                           **({"bad_records": bad} if bad else {}), **({"blank_lines": blank} if blank else {})})
            logger.info("object %d of %d: %s, %d records%s", index, len(objects), obj.key, records,
                        f", {bad} bad record(s) quarantined" if bad else "")
        sink.finish()
        errors.finish()
    except BaseException:
        sink.abort()
        errors.abort()
        raise

    shards = sink.written
    manifest: list[Any] = [{"prefix": shard_prefix}, *[s["key"] for s in shards]]
    store.put_bytes(manifest_uri, json.dumps(manifest, indent=1).encode())
    failpoint("shard.before_summary", shard_prefix)
    seconds = time.monotonic() - started
    records = sum(s["records"] for s in shards)
    summary = {
        "format": fmt,
        "content_type": FORMATS[fmt],
        "header": header.decode() if header is not None else None,
        "input_prefix": input_prefix,
        "inputs": inputs,
        "shard_prefix": shard_prefix,
        "manifest_uri": manifest_uri,
        "summary_uri": summary_uri,
        "shards": shards,
        "records": records,
        "bad_records": errors.count,
        "errors_uri": errors_uri if errors.count else None,
        "blank_lines": reader.blank,
        "bytes": stored_bytes,
        "data_bytes": total_bytes,
        "target_shard_bytes": sink.target_bytes,
        "seconds": round(seconds, 3),
    }
    store.put_bytes(summary_uri, json.dumps(summary, indent=1).encode())
    failpoint("shard.before_return", summary_uri)
    if errors.count:
        logger.warning("%d bad record(s) quarantined to %s (shard.on_bad_record: quarantine); first: %s",
                       errors.count, errors_uri, errors.first)
    if reader.blank:
        logger.info("skipped %d blank line(s)", reader.blank)
    logger.info("sharded %d records from %d object(s) into %d shard(s) in %.2f s (%.0f records/s)",
                records, len(objects), len(shards), seconds, records / seconds if seconds else 0.0)
    return summary


def _data_sizes(store: Storage, objects: list[ObjectInfo]) -> list[int]:
    """:func:`_data_bytes` of each object; several ``.gz`` objects are measured side by side (zlib releases
    the GIL while it inflates)."""
    compressed = sum(obj.key.endswith(".gz") for obj in objects)
    if compressed <= 1:
        return [_data_bytes(store, obj) for obj in objects]
    with ThreadPoolExecutor(min(4, compressed), thread_name_prefix="shard-measure") as pool:
        return list(pool.map(lambda obj: _data_bytes(store, obj), objects))


def _data_bytes(store: Storage, obj: ObjectInfo) -> int:
    """How many bytes the step will read from ``obj``: its size, or for ``.gz`` its decompressed size.

    A ``.gz`` is read through once to measure it: its trailer holds the size of the last member only,
    modulo 4 GiB. A damaged stream ends the count where it breaks; the sharding pass then fails on it
    with the error that names the place.
    """
    if not obj.key.endswith(".gz"):
        return obj.size
    total = 0
    buffer = bytearray(BLOCK_BYTES)
    with contextlib.suppress(gzip.BadGzipFile, EOFError, zlib.error), _open_object(store, obj) as stream:
        while got := stream.readinto(buffer):  # type: ignore[attr-defined]
            total += got
    return total


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


def _header_line(stream: BinaryIO, uri: str, logger: LogLike) -> tuple[bytes, int, int, int]:
    """A CSV object's header line: the first one holding something, after a byte order mark and blank lines.

    Returns the line (``b""`` when the object holds nothing else), its byte offset and line number,
    and how many blank lines came before it (they are skipped like every other blank line).
    """
    line = stream.readline(_MAX_LINE)
    offset = 0
    if line.startswith(BOM):
        logger.info("%s starts with a UTF-8 byte order mark; it is dropped", uri)
        line, offset = line[len(BOM):], len(BOM)
    number = 1
    while line and not line.strip():  # a header is never blank, whatever the number of columns
        offset += len(line)
        number += 1
        line = stream.readline(_MAX_LINE)
    return line, offset, number, number - 1


def _check_header(uri: str, line: bytes, number: int) -> bytes:
    if not line.endswith(b"\n") and len(line) >= _MAX_LINE:
        raise ShardInputError(f"{uri} line {number}: no newline in the first {_MAX_LINE} bytes; is this CSV?")
    header = line.rstrip(b"\r\n")
    try:
        header.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ShardInputError(f"{uri} line {number} (byte offset {exc.start}): the header is not valid UTF-8") from None
    if header.count(b'"') % 2:
        raise ShardInputError(f"{uri} line {number}: the header has an unbalanced double quote")
    return header


@dataclass
class _BadRecords:
    """Bad records: the first one fails the step, or (quarantine) each is appended to the errors object."""

    store: Storage
    uri: str
    quarantine: bool
    limit: int
    count: int = 0
    first: str = ""
    _stack: contextlib.ExitStack | None = None
    _out: BinaryIO | None = None

    def add(self, bad: list[BadRecord]) -> None:
        if not bad:
            return
        if not self.quarantine:
            raise ShardInputError(bad[0].message())
        if self.count + len(bad) > self.limit:
            raise ShardInputError(
                f"more than {self.limit} bad records (shard.max_bad_records): the input looks wrong as a whole, "
                f"not record by record; the latest: {bad[-1].message()}")
        if self._out is None:
            self._stack = contextlib.ExitStack()
            self._out = self._stack.enter_context(self.store.open_write(self.uri))
            self.first = bad[0].message()
        self._out.write(b"".join(json.dumps(b.as_json()).encode() + b"\n" for b in bad))
        self.count += len(bad)

    def finish(self) -> None:
        stack, self._stack, self._out = self._stack, None, None
        if stack is not None:
            stack.close()

    def abort(self) -> None:
        stack, self._stack, self._out = self._stack, None, None
        if stack is not None:
            stack.__exit__(RuntimeError, RuntimeError("shard step failed"), None)


class _ObjectReader:
    """Streams one object's records into the shards through the record checks, a block at a time.

    Blocks end at the last complete line; the rest is carried to the front of the next block.
    A block the fast checks vouch for is copied as it is; any other one goes through the exact
    line-by-line scan, whose good records are copied and bad ones reported.
    """

    def __init__(self, sink: _ShardSink, buffers: list[_Block], rules: RecordRules, errors: _BadRecords,
                 logger: LogLike, started: float, total_bytes: int) -> None:
        self.sink, self.buffers, self.rules, self.errors = sink, buffers, rules, errors
        self.logger, self.started, self.total_bytes = logger, started, total_bytes
        self.turn = 0
        self.offset = 0  # of the current object, decompressed
        self.line = 1
        self.blank = 0
        self.done_bytes = 0
        self.last_log = started

    def read(self, stream: BinaryIO, uri: str, *, first_line: int, offset: int, carry: bytes) -> None:
        self.line, self.offset = first_line, offset
        eof = False
        while True:
            block = self.buffers[self.turn]
            self.turn = 1 - self.turn
            block.wait_written()
            buffer = block.buffer
            buffer[: len(carry)] = carry
            size = len(carry)
            if not eof:
                got = _fill(stream, buffer, size)
                eof = size + got < len(buffer)
                size += got
                self.done_bytes += got
            if size == 0:
                return
            if eof and buffer[size - 1] != 0x0A:  # the object's last record lacks its newline
                buffer[size] = 0x0A
                size += 1
            end = buffer.rfind(b"\n", 0, size) + 1
            if end == 0:  # a full block without a newline: one record longer than a block
                carry = self._long_record(stream, uri, bytes(buffer[:size]), len(buffer))
                continue
            # the tail after the last newline holds none: a full buffer is counted without slicing it
            records = block.count(0, size if size == len(buffer) else end)
            if self.rules.looks_clean(buffer, end, records, block.count):
                block.last_write = _copy_into_shards(self.sink, buffer, end, records, block.count)
                used, self.line = end, self.line + records
            else:
                used = self._scan(bytes(buffer[:end]), uri, at_eof=eof and end == size,
                                  block_bytes=len(buffer))
            self.offset += used
            carry = bytes(buffer[used:size])
            self._log_progress()
            if eof and not carry:
                return

    def _scan(self, data: bytes, uri: str, *, at_eof: bool, block_bytes: int) -> int:
        result = self.rules.scan(data, uri=uri, first_line=self.line, offset=self.offset, at_eof=at_eof)
        if len(data) - result.consumed > block_bytes // 2:  # an open quoted field this long never closes
            result = self.rules.scan(data, uri=uri, first_line=self.line, offset=self.offset, at_eof=True)
        self.errors.add(result.bad)
        if result.good:
            _copy_into_shards(self.sink, result.good, len(result.good), result.good_records,
                              lambda start, end, byte=10: result.good.count(bytes((byte,)), start, end))
        self.line += result.lines
        self.blank += result.blank
        return result.consumed

    def _long_record(self, stream: BinaryIO, uri: str, head: bytes, block_bytes: int) -> bytes:
        """Scan one record longer than a block (read to its newline); returns what is carried over."""
        data = head + stream.readline(_MAX_LINE)
        self.done_bytes += len(data) - len(head)
        at_eof = not data.endswith(b"\n")
        if at_eof:
            if len(data) >= _MAX_LINE:
                raise ShardInputError(f"{uri} line {self.line} (byte offset {self.offset}): no newline within "
                                      f"{len(data)} bytes; is this line-delimited {self.rules.fmt.upper()}?")
            data += b"\n"
        used = self._scan(data, uri, at_eof=at_eof, block_bytes=block_bytes)
        self.offset += used
        return data[used:]

    def _log_progress(self) -> None:
        now = time.monotonic()
        if now - self.last_log >= 5:
            self.last_log = now
            self.logger.info("sharded %.1f of ~%.1f MB (%.0f MB/s), %d records so far", self.done_bytes / 1e6,
                             self.total_bytes / 1e6, self.done_bytes / 1e6 / (now - self.started),
                             self.sink.total_records)


def shard_origins(summary: dict[str, Any]) -> dict[str, str]:
    """For each shard key, which input objects (and record numbers) its records came from.

    Shards hold the partition's records in input order, so a shard's record range maps back
    onto the inputs' ranges: ``part-00001.csv`` -> ``records 50001-100000 of the partition:
    customers-0003.csv (records 1-25000), customers-0004.csv (1-25000)``.
    """
    spans: list[tuple[int, int, str]] = []  # [start, end) of each input in partition record numbers
    start = 0
    for item in summary["inputs"]:
        spans.append((start, start + item["records"], item["uri"].rsplit("/", 1)[-1]))
        start += item["records"]
    origins: dict[str, str] = {}
    first = 0
    for shard in summary["shards"]:
        last = first + shard["records"]
        pieces = [
            f"{name} (records {max(first, lo) - lo + 1}-{min(last, hi) - lo})"
            for lo, hi, name in spans
            if lo < last and hi > first
        ]
        origins[shard["key"]] = f"records {first + 1}-{last} of the partition: {', '.join(pieces)}"
        first = last
    return origins


class _Block:
    """A reusable read buffer, its newline counter, and the last write that still reads from it.

    Counting uses numpy's vectorised compare when ``use_numpy`` and numpy imports, else
    ``bytearray.replace`` (or ``bytearray.count`` for short ranges).
    """

    def __init__(self, buffer: bytearray, use_numpy: bool) -> None:
        self.buffer = buffer
        self.last_write: Future[None] | None = None
        self._np: Any = None
        if not use_numpy:
            return
        try:
            import numpy as np
        except ImportError:  # numpy is optional: bytearray.count is correct, just slower
            return
        self._np = np
        self._bytes = np.frombuffer(buffer, dtype=np.uint8)
        self._hits = np.empty(len(buffer), dtype=np.bool_)

    def count(self, start: int, end: int, byte: int = 0x0A) -> int:
        """How many ``byte`` (default ``b"\\n"``) are in ``buffer[start:end]``."""
        if end - start < _NUMPY_MIN_RANGE:
            return self.buffer.count(bytes((byte,)), start, end)
        if self._np is not None:
            hits = self._hits[: end - start]
            self._np.equal(self._bytes[start:end], byte, out=hits)
            return int(self._np.count_nonzero(hits))
        if byte != 0x0A:
            return self.buffer.count(bytes((byte,)), start, end)
        # bytearray.count tests byte by byte; replace() finds newlines with memchr and is ~1.7x faster
        # even though it builds a copy without them
        part = self.buffer if start == 0 and end == len(self.buffer) else self.buffer[start:end]
        return (end - start) - len(part.replace(b"\n", b""))

    def wait_written(self) -> None:
        """Block until the buffer's pieces are written, so it can be refilled (a write error is raised)."""
        if self.last_write is not None:
            self.last_write.result()
            self.last_write = None


def _fill(stream: BinaryIO, buffer: bytearray, start: int = 0) -> int:
    """Read into ``buffer[start:]`` until it is full or the stream ends; returns how many bytes were read."""
    readinto = getattr(stream, "readinto", None)
    if readinto is None:  # pragma: no cover - every stream the storages return has readinto
        block = stream.read(len(buffer) - start)
        buffer[start : start + len(block)] = block
        return len(block)
    view = memoryview(buffer)
    filled = start
    while filled < len(buffer):  # raw and network streams may return less than asked
        got = readinto(view[filled:])
        if not got:
            break
        filled += got
    return filled - start


def _copy_into_shards(sink: _ShardSink, data: bytearray | bytes, end: int, records: int,
                      count: Callable[..., int]) -> Future[None] | None:
    """Copy ``data[:end]`` (``records`` complete lines) into the shards, cutting at the first newline past a
    shard's target size; returns the last write (``data`` must not change until it is done)."""
    view = memoryview(data)
    pos, last = 0, None
    while pos < end:
        room = sink.room()
        if room <= 0:  # the shard is full already
            sink.cut()
            continue
        if end - pos <= room:
            return sink.write(view[pos:end], records)
        cut = data.find(b"\n", pos + max(int(room), 1) - 1, end)
        if cut < 0 or cut + 1 == end:
            return sink.write(view[pos:end], records)
        n = count(pos, cut + 1)
        last = sink.write(view[pos : cut + 1], n)
        records -= n
        sink.cut()
        pos = cut + 1
    return last
