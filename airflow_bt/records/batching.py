"""Mini-batching records into request payloads, the way Batch Transform's ``BatchStrategy`` does.

``MaxPayloadInMB`` is measured in binary megabytes: ``1 MB = 1024 * 1024`` bytes
(:data:`MB`), and the limit applies to the payload exactly as sent, i.e. including
the ``b"\\n"`` that ends every ``Line`` record. ``MaxPayloadInMB=0`` means no limit
(SageMaker's "chunked" mode): each payload then holds every record of the object.

- ``SingleRecord``: one record per request.
- ``MultiRecord``: as many whole records as fit in the limit.

A record that does not fit on its own raises :class:`RecordTooLargeError` naming the
object and its 1-based record number. No empty payload is ever produced: an empty
object yields nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

from airflow_bt.records.splitting import READ_BLOCK, iter_records, too_large

MB = 1024 * 1024
"""Bytes in one ``MaxPayloadInMB`` unit."""

BATCH_STRATEGIES = ("SingleRecord", "MultiRecord")
"""The ``BatchStrategy`` values."""

Payload = tuple[bytes, int]
"""A request body and the number of records in it."""


def payload_limit(max_payload_in_mb: int) -> int | None:
    """The payload limit in bytes for ``MaxPayloadInMB`` (``None``: unlimited, for 0)."""
    if max_payload_in_mb < 0:
        raise ValueError(f"MaxPayloadInMB must be >= 0, got {max_payload_in_mb}")
    return max_payload_in_mb * MB if max_payload_in_mb else None


def iter_payloads(
    stream: BinaryIO, *, split_type: str, batch_strategy: str, max_payload_in_mb: int = 6,
    max_payload_bytes: int | None = None, uri: str = "<stream>", block_size: int = READ_BLOCK,
) -> Iterator[Payload]:
    """Yield ``(payload, record_count)`` for every request an object's ``stream`` becomes, in order.

    The limit is ``max_payload_in_mb`` binary megabytes, or exactly ``max_payload_bytes``
    when that is given (byte precision, for tests and tools). ``uri`` names the object in
    errors.

    ``Line`` + ``MultiRecord`` takes a fast path that never makes one Python object per
    record: it reads blocks of about the payload size, cuts each payload at the last
    ``b"\\n"`` that fits and counts records with ``bytes.count``. Memory stays around two
    payloads whatever the object size (``SplitType=None`` reads the object whole).
    """
    if batch_strategy not in BATCH_STRATEGIES:
        raise ValueError(f"unknown BatchStrategy {batch_strategy!r}; "
                         f"expected one of {', '.join(BATCH_STRATEGIES)}")
    limit = payload_limit(max_payload_in_mb) if max_payload_bytes is None else max_payload_bytes
    if limit is not None and limit < 1:
        raise ValueError(f"max_payload_bytes must be >= 1, got {limit}")
    if split_type == "Line" and batch_strategy == "MultiRecord":
        return _line_multi(stream, limit, uri, block_size)
    records = iter_records(stream, split_type, uri=uri, max_record_bytes=limit, block_size=block_size)
    if batch_strategy == "SingleRecord" or split_type == "None":
        return ((record, 1) for record in records)
    return _pack(records, limit)


def _pack(records: Iterator[bytes], limit: int | None) -> Iterator[Payload]:
    """MultiRecord for splitters that yield records (each already checked against ``limit``)."""
    batch: list[bytes] = []
    size = 0
    for record in records:
        if batch and limit is not None and size + len(record) > limit:
            yield b"".join(batch), len(batch)
            batch, size = [], 0
        batch.append(record)
        size += len(record)
    if batch:
        yield b"".join(batch), len(batch)


def _line_multi(stream: BinaryIO, limit: int | None, uri: str, block_size: int) -> Iterator[Payload]:
    if limit is None:
        data = stream.read()
        if data:
            if not data.endswith(b"\n"):
                data += b"\n"
            yield data, data.count(b"\n")
        return
    buf = b""
    pos = 0  # where the unsent part of buf starts
    eof = False
    done = 0  # records already yielded, for the 1-based number in errors
    while True:
        if not eof and len(buf) - pos <= limit:
            parts = [buf[pos:]]
            have = len(parts[0])
            while have <= limit:  # one byte past the limit tells whether the rest fits whole
                chunk = stream.read(max(limit + 1 - have, block_size))
                if not chunk:
                    eof = True
                    break
                parts.append(chunk)
                have += len(chunk)
            buf, pos = b"".join(parts), 0
            if eof and buf and not buf.endswith(b"\n"):
                buf += b"\n"
        avail = len(buf) - pos
        if not avail:
            return
        if avail <= limit:
            payload, pos = buf[pos:], len(buf)
        else:
            cut = buf.rfind(b"\n", pos, pos + limit)
            if cut < 0:
                nl = buf.find(b"\n", pos + limit)
                raise too_large(uri, done + 1, limit, nl + 1 - pos if nl >= 0 else None)
            payload, pos = buf[pos: cut + 1], cut + 1
        n = payload.count(b"\n")
        done += n
        yield payload, n
