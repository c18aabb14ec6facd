"""Reading an object into the shards: :class:`_ObjectReader` streams its records through the record
checks a block at a time, in reusable :class:`_Block` buffers whose newlines it counts, and
:func:`_copy_into_shards` cuts the blocks into shards at newlines."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, BinaryIO

from airflow_bt.logs import LogLike
from airflow_bt.steps.input_checks import RecordRules
from airflow_bt.steps.shard.common import _MAX_LINE, ShardInputError
from airflow_bt.steps.shard.quarantine import _BadRecords
from airflow_bt.steps.shard.sink import _ShardSink

_NUMPY_MIN_RANGE = 64 * 1024  # below this, bytearray.count is as fast as the others


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
