"""Splitting a byte stream into records, the way Batch Transform's ``SplitType`` does.

Every splitter streams: it reads the input in large blocks and keeps at most one
block plus one partial record in memory (``SplitType=None`` is the exception: the
whole object is one record).

Records keep their framing, so concatenating records gives a valid payload:

- ``Line``: each record is one line *including* its ``b"\\n"`` terminator; a last
  line without a newline gets one added. Every line is a record, empty ones too.
- ``RecordIO``: MXNet RecordIO records (magic ``0xced7230a``, length word, data,
  padding to 4 bytes), multi-part records kept together, header included.
- ``TFRecord``: ``uint64 length, uint32 crc, data, uint32 crc`` frames, header
  included (the CRCs are not verified: crc32c is not in the standard library).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from typing import BinaryIO

SPLIT_TYPES = ("None", "Line", "RecordIO", "TFRecord")
"""The ``TransformInput.SplitType`` values."""

READ_BLOCK = 1 << 20
"""Bytes asked of the underlying stream per read."""

_MB = 1024 * 1024
_RECORDIO_MAGIC = 0xCED7230A
_RECORDIO_LEN_MASK = (1 << 29) - 1


class RecordError(ValueError):
    """A record cannot be split or sent; the message names the object and the 1-based record number."""

    def __init__(self, message: str, *, uri: str = "", record: int = 0) -> None:
        super().__init__(message)
        self.uri = uri
        self.record = record


class RecordTooLargeError(RecordError):
    """One record is larger than the payload limit, so no request can carry it."""


class RecordFormatError(RecordError):
    """The bytes are not valid records of the split type (bad magic, truncated frame)."""


def too_large(uri: str, record: int, limit: int, size: int | None = None) -> RecordTooLargeError:
    """The error for record ``record`` (1-based) of ``uri`` not fitting in ``limit`` bytes."""
    what = f"{size} bytes" if size is not None else f"more than {limit} bytes"
    mb = f" (MaxPayloadInMB={limit // _MB})" if limit % _MB == 0 else ""
    return RecordTooLargeError(
        f"{uri}: record {record} is {what}, over the payload limit of {limit} bytes{mb}; "
        "raise MaxPayloadInMB (at most 100) or make the record smaller",
        uri=uri, record=record,
    )


def iter_records(
    stream: BinaryIO, split_type: str, *, uri: str = "<stream>", max_record_bytes: int | None = None,
    block_size: int = READ_BLOCK,
) -> Iterator[bytes]:
    """Yield the records of ``stream`` for ``split_type`` (one of :data:`SPLIT_TYPES`).

    ``max_record_bytes``, when given, makes a longer record raise :class:`RecordTooLargeError`
    as soon as it is seen, so an oversized record is never buffered whole. ``uri`` only
    names the object in error messages. An empty stream has no records.
    """
    try:
        splitter = _SPLITTERS[split_type]
    except KeyError:
        raise ValueError(f"unknown SplitType {split_type!r}; "
                         f"expected one of {', '.join(SPLIT_TYPES)}") from None
    return splitter(stream, uri, max_record_bytes, block_size)


def _whole(stream: BinaryIO, uri: str, limit: int | None, block_size: int) -> Iterator[bytes]:
    data = stream.read() if limit is None else stream.read(limit + 1)
    if limit is not None and len(data) > limit:
        raise too_large(uri, 1, limit)
    if data:
        yield data


def _lines(stream: BinaryIO, uri: str, limit: int | None, block_size: int) -> Iterator[bytes]:
    pieces: list[bytes] = []  # the current partial line, when it spans blocks
    pending = 0
    count = 0
    while True:
        block = stream.read(block_size)
        if not block:
            break
        last_nl = block.rfind(b"\n")
        if last_nl < 0:
            pieces.append(block)
            pending += len(block)
            if limit is not None and pending + 1 > limit:
                raise too_large(uri, count + 1, limit)
            continue
        head = block[:last_nl]
        if pieces:
            head = b"".join(pieces) + head
            pieces, pending = [], 0
        for line in head.split(b"\n"):
            count += 1
            if limit is not None and len(line) + 1 > limit:
                raise too_large(uri, count, limit, len(line) + 1)
            yield line + b"\n"
        tail = block[last_nl + 1:]
        if tail:
            pieces, pending = [tail], len(tail)
    if pieces:
        line = b"".join(pieces) + b"\n"
        if limit is not None and len(line) > limit:
            raise too_large(uri, count + 1, limit, len(line))
        yield line


def _truncated(uri: str, kind: str, record: int) -> RecordFormatError:
    return RecordFormatError(f"{uri}: {kind} record {record} is truncated", uri=uri, record=record)


class _Reader:
    """Exact-size reads served from big blocks (binary framings read 4-8 bytes at a time)."""

    def __init__(self, stream: BinaryIO, block_size: int) -> None:
        self._stream = stream
        self._block = block_size
        self._buf = b""
        self._pos = 0

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes; fewer only at the end of the stream."""
        end = self._pos + n
        if end <= len(self._buf):
            out = self._buf[self._pos:end]
            self._pos = end
            return out
        parts = [self._buf[self._pos:]]
        have = len(parts[0])
        while have < n:
            chunk = self._stream.read(max(self._block, n - have))
            if not chunk:
                break
            parts.append(chunk)
            have += len(chunk)
        data = b"".join(parts)
        self._buf, self._pos = data, min(n, len(data))
        return data[:n]


def _recordio(stream: BinaryIO, uri: str, limit: int | None, block_size: int) -> Iterator[bytes]:
    reader = _Reader(stream, block_size)
    count = 0
    parts: list[bytes] = []
    size = 0
    while True:
        header = reader.read(8)
        if not header:
            break
        if len(header) < 8:
            raise _truncated(uri, "RecordIO", count + 1)
        magic, lrec = struct.unpack("<II", header)
        if magic != _RECORDIO_MAGIC:
            raise RecordFormatError(f"{uri}: RecordIO record {count + 1} has a bad magic number {magic:#x}",
                                    uri=uri, record=count + 1)
        cflag, length = lrec >> 29, lrec & _RECORDIO_LEN_MASK
        padded = (length + 3) & ~3
        size += 8 + padded
        if limit is not None and size > limit:
            raise too_large(uri, count + 1, limit, None)
        body = reader.read(padded)
        if len(body) < padded:
            raise _truncated(uri, "RecordIO", count + 1)
        parts.append(header + body)
        if cflag in (0, 3):  # a whole record, or the last part of a multi-part one
            count += 1
            yield b"".join(parts) if len(parts) > 1 else parts[0]
            parts, size = [], 0
    if parts:
        raise RecordFormatError(f"{uri}: RecordIO record {count + 1} is missing its last part",
                                uri=uri, record=count + 1)


def _tfrecord(stream: BinaryIO, uri: str, limit: int | None, block_size: int) -> Iterator[bytes]:
    reader = _Reader(stream, block_size)
    count = 0
    while True:
        header = reader.read(12)
        if not header:
            break
        if len(header) < 12:
            raise _truncated(uri, "TFRecord", count + 1)
        (length,) = struct.unpack("<Q", header[:8])
        size = 12 + length + 4
        if limit is not None and size > limit:
            raise too_large(uri, count + 1, limit, size)
        rest = reader.read(length + 4)
        if len(rest) < length + 4:
            raise _truncated(uri, "TFRecord", count + 1)
        count += 1
        yield header + rest


_SPLITTERS: dict[str, Callable[[BinaryIO, str, int | None, int], Iterator[bytes]]] = {
    "None": _whole,
    "Line": _lines,
    "RecordIO": _recordio,
    "TFRecord": _tfrecord,
}
