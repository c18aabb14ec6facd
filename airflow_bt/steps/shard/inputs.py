"""The shard step's inputs: which objects of a partition are data, their format, how to open them.

Also how many bytes each one holds once decompressed (the sizes the shards are planned on), and
the CSV header at the start of an object.
"""

from __future__ import annotations

import contextlib
import gzip
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import BinaryIO

from airflow_bt.logs import LogLike
from airflow_bt.steps.input_checks import BOM
from airflow_bt.steps.shard.common import _MAX_LINE, INPUT_FORMATS, ShardInputError
from airflow_bt.storage.base import ObjectInfo, Storage

_EXTENSIONS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".parquet": "parquet",
               ".parq": "parquet", ".pq": "parquet"}


def is_data_key(key: str) -> bool:
    """Markers and hidden files (``_SUCCESS``, ``.crc``) are not data."""
    name = key.rsplit("/", 1)[-1]
    return bool(name) and not name.startswith(("_", "."))


def detect_format(key: str) -> str | None:
    if key.endswith(".gz"):  # Parquet compresses inside the file: a .gz of one is not read
        fmt = detect_format(key[:-3])
        return fmt if fmt != "parquet" else None
    name = key
    for ext, fmt in _EXTENSIONS.items():
        if name.endswith(ext):
            return fmt
    return None


def list_inputs(store: Storage, input_prefix: str, data_format: str = "auto") -> tuple[list[ObjectInfo], str]:
    """The partition's data objects in key order, and their one format (``csv``, ``jsonl`` or ``parquet``)."""
    objects = [obj for obj in store.list(input_prefix) if is_data_key(obj.key)]
    if not objects:
        raise ShardInputError(f"no input objects under {input_prefix} (markers like _SUCCESS do not count)")
    if data_format != "auto":
        if data_format not in INPUT_FORMATS:
            raise ShardInputError(f"format must be one of auto, {', '.join(INPUT_FORMATS)}; got {data_format!r}")
        return objects, data_format
    found = {obj.uri: detect_format(obj.key) for obj in objects}
    unknown = [uri for uri, fmt in found.items() if fmt is None]
    if unknown:
        raise ShardInputError(
            f"{unknown[0]}: cannot tell the format from the name (expected .csv, .jsonl, .ndjson, .json, "
            "optionally .gz, or .parquet); set `input.format` (csv, jsonl or parquet) in the DAG config"
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


def _data_sizes(store: Storage, objects: list[ObjectInfo], block_bytes: int) -> list[int]:
    """:func:`_data_bytes` of each object; several ``.gz`` objects are measured side by side (zlib releases
    the GIL while it inflates)."""
    compressed = sum(obj.key.endswith(".gz") for obj in objects)
    if compressed <= 1:
        return [_data_bytes(store, obj, block_bytes) for obj in objects]
    with ThreadPoolExecutor(min(4, compressed), thread_name_prefix="shard-measure") as pool:
        return list(pool.map(lambda obj: _data_bytes(store, obj, block_bytes), objects))


def _data_bytes(store: Storage, obj: ObjectInfo, block_bytes: int) -> int:
    """How many bytes the step will read from ``obj``: its size, or for ``.gz`` its decompressed size.

    A ``.gz`` is read through once to measure it (``block_bytes`` at a time): its trailer holds the size
    of the last member only, modulo 4 GiB. A damaged stream ends the count where it breaks; the sharding
    pass then fails on it with the error that names the place.
    """
    if not obj.key.endswith(".gz"):
        return obj.size
    total = 0
    buffer = bytearray(block_bytes)
    with contextlib.suppress(gzip.BadGzipFile, EOFError, zlib.error), _open_object(store, obj) as stream:
        while got := stream.readinto(buffer):  # type: ignore[attr-defined]
            total += got
    return total


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
