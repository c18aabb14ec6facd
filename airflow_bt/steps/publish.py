"""The postprocess step: reconcile predictions with the shards, join them to the rows, publish.

Publication order is the contract readers rely on: the part objects, then ``_manifest.json``,
then ``_SUCCESS``, and only then is the date's ``_LATEST.json`` pointed at the new attempt.
Every object of the attempt is written create-only; nothing of an earlier attempt is touched.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO

import pendulum

from airflow_bt.logs import LogLike
from airflow_bt.steps.layout import LATEST_NAME, MANIFEST_NAME, SUCCESS_NAME
from airflow_bt.storage.base import ObjectNotFoundError, Storage
from airflow_bt.storage.uris import join_uri

_BATCH_LINES = 8192
_JOIN_BLOCK = 256 * 1024  # bytes of rows joined per block: ~4k lines, a few MB of objects at most
log = logging.getLogger(__name__)


class ReconcileError(ValueError):
    """Predictions and input records do not pair up one to one."""


def count_lines(stream: BinaryIO) -> int:
    """Records in a newline-delimited stream; a last line without its newline counts too."""
    count, last = 0, b"\n"
    while block := stream.read(4 * 1024 * 1024):
        count += block.count(b"\n")
        last = block[-1:]
    return count + (last != b"\n")


def prediction_uri(predictions_prefix: str, shard_key: str) -> str:
    return join_uri(predictions_prefix, shard_key + ".out")


def reconcile(store: Storage, summary: dict[str, Any], predictions_prefix: str) -> list[int]:
    """Check every shard has exactly one prediction per record, before anything is written."""
    counts = []
    for shard in summary["shards"]:
        uri = prediction_uri(predictions_prefix, shard["key"])
        try:
            with store.open_read(uri) as stream:
                got = count_lines(stream)
        except ObjectNotFoundError:
            raise ReconcileError(
                f"shard {shard['key']} ({shard['records']} records) has no predictions: {uri} is missing"
            ) from None
        if got != shard["records"]:
            raise ReconcileError(
                f"shard {shard['key']}: {shard['records']} input records but {got} predictions in {uri}; "
                "every input record must get exactly one prediction"
            )
        counts.append(got)
    return counts


def _strip(line: bytes) -> bytes:
    return line.rstrip(b"\r\n")


def _line_blocks(stream: BinaryIO, size: int) -> Iterator[list[bytes]]:
    """The stream's lines without their ``\\n`` (and trailing ``\\r``), ``size`` bytes' worth at a time."""
    tail = b""
    while block := stream.read(size):
        data = tail + block if tail else block
        lines = data.split(b"\n")
        tail = lines.pop()
        if b"\r" in data:
            lines = [_strip(line) for line in lines]
        if lines:
            yield lines
    if tail:  # a last line without its newline is a line too
        yield [_strip(tail)]


def _join_csv(rows: BinaryIO, preds: BinaryIO, width: int, shard_key: str) -> Iterator[bytes]:
    """``row,prediction\\n`` for every pair, a block of rows at a time (the per-line work runs in C)."""
    # predictions are short lines: smaller reads keep the number of line objects alive similar
    pred_blocks = _line_blocks(preds, max(1, _JOIN_BLOCK // 4))
    pending: list[bytes] = []
    used = 0  # of pending
    checked = False
    for lines in _line_blocks(rows, _JOIN_BLOCK):
        while len(pending) - used < len(lines):
            more = next(pred_blocks, None)
            if more is None:
                raise ReconcileError(f"shard {shard_key}: fewer predictions than input records")
            pending, used = pending[used:] + more, 0
        answers = pending[used : used + len(lines)]
        used += len(lines)
        if not checked:
            checked = True
            pred = answers[0]
            if pred.count(b",") + 1 != width:
                raise ReconcileError(
                    f"shard {shard_key}: the model returned {pred.count(b',') + 1} value(s) per record "
                    f"({pred[:80]!r}) but prediction_columns names {width}; make them agree"
                )
        yield b"\n".join(map(b",".join, zip(lines, answers, strict=True))) + b"\n"
    if len(pending) > used or next(pred_blocks, None) is not None:
        raise ReconcileError(f"shard {shard_key}: more predictions than input records")


def _join_jsonl(rows: Iterable[bytes], preds: Iterable[bytes], columns: list[str], shard_key: str
                ) -> Iterator[bytes]:
    for number, (row, pred) in enumerate(zip(rows, preds, strict=True), start=1):
        record = json.loads(row)
        try:
            value = json.loads(pred)
        except ValueError:
            value = _strip(pred).decode()
        if isinstance(value, dict):
            record.update(value)
        elif isinstance(record, dict):
            record[columns[0]] = value
        else:
            raise ReconcileError(f"shard {shard_key} record {number}: input is not a JSON object")
        yield json.dumps(record, separators=(",", ":")).encode() + b"\n"


def _write_joined(out: BinaryIO, lines: Iterator[bytes]) -> None:
    batch: list[bytes] = []
    for line in lines:
        batch.append(line)
        if len(batch) >= _BATCH_LINES:
            out.write(b"".join(batch))
            batch.clear()
    out.write(b"".join(batch))


def publish_attempt(
    store: Storage,
    summary: dict[str, Any],
    predictions_prefix: str,
    attempt_prefix: str,
    latest_uri: str,
    *,
    prediction_columns: list[str],
    metadata: dict[str, Any] | None = None,
    logger: LogLike | None = None,
) -> dict[str, Any]:
    """Join predictions onto the shards' rows and publish them write-once under ``attempt_prefix``.

    Returns the manifest that was published (and that ``_LATEST.json`` now points to).
    """
    logger = logger or log
    started = time.monotonic()
    if not prediction_columns:
        raise ValueError("prediction_columns must name at least one column")
    counts = reconcile(store, summary, predictions_prefix)
    fmt = summary["format"]
    header = summary.get("header")
    parts = []
    for index, shard in enumerate(summary["shards"], start=1):
        part_uri = join_uri(attempt_prefix, shard["key"])
        with contextlib.ExitStack() as stack:
            rows = stack.enter_context(store.open_read(shard["uri"]))
            preds = stack.enter_context(store.open_read(prediction_uri(predictions_prefix, shard["key"])))
            out = stack.enter_context(store.open_write(part_uri))
            if fmt == "csv":
                out.write((f"{header}," + ",".join(prediction_columns) + "\n").encode())
                for block in _join_csv(rows, preds, len(prediction_columns), shard["key"]):
                    out.write(block)
            else:
                _write_joined(out, _join_jsonl(rows, preds, prediction_columns, shard["key"]))
        parts.append({"key": shard["key"], "uri": part_uri, "rows": shard["records"]})
        logger.info("published shard %d of %d: %s, %d rows", index, len(summary["shards"]), part_uri,
                    shard["records"])

    rows_in = sum(s["records"] for s in summary["shards"])
    published_at = pendulum.now("UTC").to_iso8601_string()
    manifest = {
        "attempt_prefix": attempt_prefix,
        "published_at": published_at,
        "format": fmt,
        "columns": [*(header or "").split(","), *prediction_columns] if fmt == "csv" else None,
        "prediction_columns": list(prediction_columns),
        "rows_in": rows_in,
        "rows_out": sum(counts),
        "parts": parts,
        "inputs": summary["inputs"],
        "input_prefix": summary["input_prefix"],
        "shards": summary["shard_prefix"],
        "predictions": predictions_prefix,
        "publish_seconds": round(time.monotonic() - started, 3),
        **(metadata or {}),
    }
    store.put_bytes(join_uri(attempt_prefix, MANIFEST_NAME), json.dumps(manifest, indent=1, default=str).encode())
    store.put_bytes(join_uri(attempt_prefix, SUCCESS_NAME), b"")
    point_latest(store, latest_uri, manifest)
    logger.info("published %d rows to %s in %.2f s; %s points to it", rows_in, attempt_prefix,
                time.monotonic() - started, LATEST_NAME)
    return manifest


def point_latest(store: Storage, latest_uri: str, manifest: dict[str, Any]) -> None:
    """Point ``_LATEST.json`` at a published attempt (one with ``_SUCCESS``), atomically."""
    attempt = manifest["attempt_prefix"]
    if not store.exists(join_uri(attempt, SUCCESS_NAME)):
        raise RuntimeError(f"refusing to point {latest_uri} at {attempt}: it has no {SUCCESS_NAME}")
    pointer: dict[str, Any] = {
        "attempt_prefix": attempt,
        "manifest": join_uri(attempt, MANIFEST_NAME),
        "published_at": manifest["published_at"],
        "rows": manifest["rows_out"],
        **{k: manifest[k] for k in ("run_id", "try_number", "job_name") if k in manifest},
    }
    store.replace_bytes(latest_uri, json.dumps(pointer, indent=1).encode())


def read_latest(store: Storage, output_root: str) -> dict[str, Any] | None:
    """The pointer a reader follows, or None when nothing was published for the date."""
    try:
        return dict(json.loads(store.read_bytes(join_uri(output_root, LATEST_NAME))))
    except ObjectNotFoundError:
        return None
