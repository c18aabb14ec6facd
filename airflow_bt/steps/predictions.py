"""Where a run's predictions are: one ``<shard>.out`` per shard, in this try's output or an earlier try's.

A transform retry re-processes only the shards that no earlier try of the same run (with the same
model) finished, so a run's predictions can be spread over several output prefixes. Each shard's
predictions are one object, written create-only, so an ``.out`` that exists is complete; a dead-letter
run also leaves ``errors/<shard>.jsonl`` beside it (written first) for the records the model
rejected. The publish step pairs each shard with the first prefix that holds its ``.out``.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any, BinaryIO

from airflow_bt.storage.base import ObjectNotFoundError, Storage
from airflow_bt.storage.uris import as_prefix, join_uri

ERRORS_FOLDER = "errors"
JOIN_BLOCK = 256 * 1024  # bytes of rows joined per block: ~4k lines, a few MB of objects at most


class ReconcileError(ValueError):
    """Predictions and input records do not pair up one to one."""


def strip_newline(line: bytes) -> bytes:
    return line.rstrip(b"\r\n")


def line_blocks(stream: BinaryIO, size: int, count: bytes | None = None
                ) -> Iterator[tuple[list[bytes], int, bool]]:
    """The stream's lines without their ``\\n`` (and trailing ``\\r``), ``size`` bytes' worth at a time,
    each block with how many ``count`` bytes its lines hold (0 without ``count``) and whether they hold
    a ``"`` (a quoted field, whose commas a count cannot tell from separators)."""
    tail = b""
    while block := stream.read(size):
        data = tail + block if tail else block
        lines = data.split(b"\n")
        tail = lines.pop()
        end = len(data) - len(tail)
        counted = data.count(count, 0, end) if count else 0
        if b"\r" in data:
            lines = [strip_newline(line) for line in lines]
        if lines:
            yield lines, counted, data.find(b'"', 0, end) >= 0
    if tail:  # a last line without its newline is a line too
        yield [strip_newline(tail)], tail.count(count) if count else 0, b'"' in tail


def _prediction_blocks(preds: BinaryIO) -> Iterator[tuple[list[bytes], int, int]]:
    # predictions are short lines: smaller reads keep the number of line objects alive similar
    return line_blocks(preds, max(1, JOIN_BLOCK // 4), b",")


#: Sees every block of prediction lines as it is read, with their format (``csv`` or ``jsonl``): the
#: publish step's statistics (:mod:`airflow_bt.steps.checks`) are computed on the way, not in a second pass.
Tap = Callable[[list[bytes], str], None]


def _tapped(blocks: Iterator[list[bytes]], fmt: str, tap: Tap | None) -> Iterator[list[bytes]]:
    for lines in blocks:
        if tap is not None:
            tap(lines, fmt)
        yield lines


def checked_predictions(preds: BinaryIO, width: int, shard_key: str, tap: Tap | None = None
                        ) -> Iterator[list[bytes]]:
    """The prediction lines, a block at a time, each checked to hold ``width`` values (commas counted per block)."""
    return _tapped(_checked(_prediction_blocks(preds), width, shard_key), "csv", tap)


def sniffed_predictions(preds: BinaryIO, width: int, shard_key: str, tap: Tap | None = None
                        ) -> tuple[str, Iterator[list[bytes]]]:
    """``("jsonl", blocks)`` when the model answered JSON objects (``application/jsonlines``), else
    ``("csv", blocks)`` checked as :func:`checked_predictions` does: the answer, not the shard's format, tells
    (JSON Lines shards may well get CSV predictions back)."""
    blocks = _prediction_blocks(preds)
    first = next(blocks, None)
    if first is None:
        return "csv", iter(())
    chained = itertools.chain([first], blocks)
    if answered_json(first[0]):
        return "jsonl", _tapped((lines for lines, _commas, _quoted in chained), "jsonl", tap)
    return "csv", _tapped(_checked(chained, width, shard_key), "csv", tap)


def answered_json(lines: list[bytes]) -> bool:
    """Whether prediction lines are JSON objects (``application/jsonlines``), judged by the first one."""
    return bool(lines) and lines[0].lstrip().startswith(b"{")


def json_prediction_values(lines: list[bytes], columns: list[str]) -> list[list[Any]]:
    """One list of values per prediction column from JSON prediction lines: an object's keys, or a bare
    value (or a line that is not JSON, as text) for the first column, as the JSON Lines join reads them."""
    values: list[list[Any]] = [[] for _ in columns]
    for line in lines:
        try:
            answer = json.loads(line)
        except ValueError:
            answer = line.decode()
        for index, name in enumerate(columns):
            values[index].append(answer.get(name) if isinstance(answer, dict) else (answer if index == 0 else None))
    return values


def tapped_lines(preds: BinaryIO, tap: Tap | None) -> Iterator[bytes]:
    """The prediction lines one by one (JSON Lines joins), the tap seeing them a block at a time."""
    for lines, _commas, _quoted in _prediction_blocks(preds):
        if tap is not None and lines:
            tap(lines, "jsonl" if answered_json(lines) else "csv")
        yield from lines


def _checked(blocks: Iterator[tuple[list[bytes], int, int]], width: int, shard_key: str) -> Iterator[list[bytes]]:
    number = 0
    for lines, commas, _quoted in blocks:
        if commas != len(lines) * (width - 1):
            for offset, pred in enumerate(lines, start=1):
                if pred.count(b",") + 1 != width:
                    raise ReconcileError(
                        f"shard {shard_key} prediction {number + offset}: the model returned {pred.count(b',') + 1} "
                        f"value(s) ({pred[:80]!r}) but prediction_columns names {width}; make them agree")
        number += len(lines)
        yield lines


def count_lines(stream: BinaryIO) -> int:
    """Records in a newline-delimited stream; a last line without its newline counts too."""
    count, last = 0, b"\n"
    while block := stream.read(4 * 1024 * 1024):
        count += block.count(b"\n")
        last = block[-1:]
    return count + (last != b"\n")


def prediction_uri(prefix: str, shard_key: str) -> str:
    return join_uri(prefix, shard_key + ".out")


def rejected_uri(prefix: str, shard_key: str) -> str:
    """The model-rejected records of a shard (dead-letter), beside its predictions."""
    return join_uri(prefix, ERRORS_FOLDER, shard_key + ".jsonl")


def locate(store: Storage, shard_keys: Iterable[str], prefixes: list[str]) -> dict[str, tuple[str, bool]]:
    """Shard key -> (the first of ``prefixes`` that holds its ``.out``, whether it has rejected records there).

    One listing per prefix (recursive, so it also shows ``errors/``): no request per shard.
    """
    wanted = {key + ".out": key for key in shard_keys}
    found: dict[str, tuple[str, bool]] = {}
    for prefix in prefixes:
        listed = {obj.key for obj in store.list(as_prefix(prefix))}
        for name in listed:
            key = wanted.get(name)
            if key is not None and key not in found:
                found[key] = (as_prefix(prefix), f"{ERRORS_FOLDER}/{key}.jsonl" in listed)
        if len(found) == len(wanted):
            break
    return found


def read_rejected(store: Storage, prefix: str, shard_key: str) -> list[dict[str, Any]]:
    """The records of a shard that the model rejected (dead-letter), in order; empty if none."""
    try:
        data = store.read_bytes(rejected_uri(prefix, shard_key))
    except ObjectNotFoundError:
        return []
    return [json.loads(line) for line in data.splitlines() if line.strip()]


def complete_outputs(store: Storage, summary: dict[str, Any], prefixes: list[str]) -> dict[str, str]:
    """Shard key -> an earlier prefix whose predictions for it are complete (one per record, or rejected).

    An ``.out`` with another count (e.g. a model that returned too few lines) is not reused: the
    shard is scored again.
    """
    located = locate(store, (s["key"] for s in summary["shards"]), prefixes)
    complete: dict[str, str] = {}
    for shard in summary["shards"]:
        if shard["key"] not in located:
            continue
        prefix, has_rejected = located[shard["key"]]
        with store.open_read(prediction_uri(prefix, shard["key"])) as stream:
            predictions = count_lines(stream)
        rejected = read_rejected(store, prefix, shard["key"]) if has_rejected else []
        if predictions + len(rejected) == shard["records"]:
            complete[shard["key"]] = prefix
    return complete


def subset_manifest(store: Storage, summary: dict[str, Any], keys: list[str], manifest_uri: str) -> str:
    """Write a ``ManifestFile`` of just ``keys`` of the shard manifest (create-only); returns its URI."""
    manifest: list[Any] = [{"prefix": summary["shard_prefix"]}, *keys]
    store.put_bytes(manifest_uri, json.dumps(manifest, indent=1).encode())
    return manifest_uri
