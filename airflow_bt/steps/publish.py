"""The postprocess step: reconcile predictions with the shards, join them to the rows, publish.

Publication order is the contract readers rely on: the part objects, then ``_manifest.json``,
then ``_SUCCESS``, and only then is the date's ``_LATEST.json`` pointed at the new attempt.
Every object of the attempt is written create-only; nothing of an earlier attempt is touched.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from itertools import compress
from typing import TYPE_CHECKING, Any, BinaryIO

import pendulum

from airflow_bt.faults import failpoint
from airflow_bt.logs import LogLike
from airflow_bt.steps.checks import CheckResult, PredictionCheckError, PredictionStats, checks_error, evaluate
from airflow_bt.steps.input_checks import csv_fields
from airflow_bt.steps.layout import ERRORS_NAME, LATEST_NAME, MANIFEST_NAME, SUCCESS_NAME
from airflow_bt.steps.pointer import completed_at, move_latest_forward
from airflow_bt.steps.predictions import (
    JOIN_BLOCK,
    ReconcileError,
    Tap,
    checked_predictions,
    count_lines,
    line_blocks,
    locate,
    prediction_uri,
    read_rejected,
    strip_newline,
    tapped_lines,
)
from airflow_bt.storage.base import ObjectNotFoundError, Storage
from airflow_bt.storage.uris import join_uri

if TYPE_CHECKING:
    from airflow_bt.steps.typed_parts import TypedSettings

__all__ = ["ReconcileError", "ShardPredictions", "point_latest", "publish_attempt", "read_latest", "reconcile"]

_BATCH_LINES = 8192
log = logging.getLogger(__name__)


@dataclass
class ShardPredictions:
    """Where one shard's predictions are, and which of its records the model rejected (dead-letter)."""

    uri: str
    rejected: list[dict[str, Any]]

    @property
    def skip(self) -> set[int]:
        return {int(r["record"]) for r in self.rejected}


def reconcile(store: Storage, summary: dict[str, Any], predictions: str | list[str]) -> dict[str, ShardPredictions]:
    """Check every shard has exactly one prediction per record (or a rejection), before anything is written.

    ``predictions`` is the transform's output prefix, or the prefixes of a partial retry in the
    order to look in (each shard's predictions are taken from the first that has them).
    """
    prefixes = [predictions] if isinstance(predictions, str) else list(predictions)
    located = locate(store, (s["key"] for s in summary["shards"]), prefixes)
    found: dict[str, ShardPredictions] = {}
    for shard in summary["shards"]:
        if shard["key"] not in located:
            raise ReconcileError(
                f"shard {shard['key']} ({shard['records']} records) has no predictions: no "
                f"{shard['key']}.out under {' or '.join(prefixes)}"
            )
        prefix, has_rejected = located[shard["key"]]
        uri = prediction_uri(prefix, shard["key"])
        rejected = read_rejected(store, prefix, shard["key"]) if has_rejected else []
        with store.open_read(uri) as stream:
            got = count_lines(stream)
        if got + len(rejected) != shard["records"]:
            also = f" and {len(rejected)} rejected by the model" if rejected else ""
            raise ReconcileError(
                f"shard {shard['key']}: {shard['records']} input records but {got} predictions in {uri}{also}; "
                "every input record must get exactly one prediction"
            )
        found[shard["key"]] = ShardPredictions(uri, rejected)
    return found


def _kept(lines: list[bytes], first: int, skip: AbstractSet[int]) -> list[bytes]:
    """``lines`` (record numbers ``first``...) without the records in ``skip``."""
    if not skip or not any(first <= n < first + len(lines) for n in skip):
        return lines
    return list(compress(lines, (n not in skip for n in range(first, first + len(lines)))))


def _join_csv(rows: BinaryIO, preds: BinaryIO, width: int, shard_key: str, *, fields: int,
              skip: AbstractSet[int] = frozenset(), origin: Callable[[int], str] = str,
              tap: Tap | None = None) -> Iterator[bytes]:
    """``row,prediction\\n`` for every pair, a block of rows at a time (the per-line work runs in C).

    Rows must have ``fields`` fields (checked per block by counting commas; a block whose count is
    off, or that holds a quoted field, whose commas may be data, is checked row by row). Records in
    ``skip`` (rejected by the model) have no prediction and are left out.
    """
    pred_blocks = checked_predictions(preds, width, shard_key, tap)
    pending: list[bytes] = []
    used = 0  # of pending
    first = 1  # record number of the block's first row
    for lines, commas, quoted in line_blocks(rows, JOIN_BLOCK, b","):
        if quoted or commas != len(lines) * (fields - 1):
            for number, line in enumerate(lines, start=first):
                if csv_fields(line) != fields:
                    raise ReconcileError(
                        f"shard {shard_key} record {number} ({origin(number)}): {csv_fields(line)} field(s), but the "
                        f"header has {fields}; nothing was published. The shard step checks this with "
                        "`shard.validation: standard` (or strict), where `shard.on_bad_record: quarantine` can set "
                        "such rows aside")
        lines, first = _kept(lines, first, skip), first + len(lines)
        while len(pending) - used < len(lines):
            more = next(pred_blocks, None)
            if more is None:
                raise ReconcileError(f"shard {shard_key}: fewer predictions than input records")
            pending, used = pending[used:] + more, 0
        answers = pending[used : used + len(lines)]
        used += len(lines)
        if not lines:
            continue
        yield b"\n".join(map(b",".join, zip(lines, answers, strict=True))) + b"\n"
    if len(pending) > used or next(pred_blocks, None) is not None:
        raise ReconcileError(f"shard {shard_key}: more predictions than input records")


def _join_jsonl(rows: Iterable[bytes], preds: Iterable[bytes], columns: list[str], shard_key: str,
                skip: AbstractSet[int] = frozenset()) -> Iterator[bytes]:
    kept = (row for number, row in enumerate(rows, start=1) if number not in skip)
    for number, (row, pred) in enumerate(zip(kept, preds, strict=True), start=1):
        record = json.loads(row)
        if not isinstance(record, dict):
            raise ReconcileError(f"shard {shard_key} record {number}: input is not a JSON object ({row[:80]!r}); "
                                 "JSON Lines input must hold one object per line to be joined with its prediction")
        try:
            value = json.loads(pred)
        except ValueError:
            value = strip_newline(pred).decode()
        if isinstance(value, dict):
            record.update(value)
        else:
            record[columns[0]] = value
        yield json.dumps(record, separators=(",", ":")).encode() + b"\n"


def _write_joined(out: BinaryIO, lines: Iterator[bytes]) -> None:
    batch: list[bytes] = []
    for line in lines:
        batch.append(line)
        if len(batch) >= _BATCH_LINES:
            out.write(b"".join(batch))
            batch.clear()
    out.write(b"".join(batch))


def _origin(summary: dict[str, Any], shard_key: str) -> Callable[[int], str]:
    """Record number in a shard -> ``<input object> record <n>`` (records the shard step kept, in order)."""
    start = 0
    for shard in summary["shards"]:
        if shard["key"] == shard_key:
            break
        start += shard["records"]

    def where(number: int) -> str:
        position = start + number
        for item in summary["inputs"]:
            if position <= item["records"]:
                return f"{item['uri'].rsplit('/', 1)[-1]} record {position}"
            position -= item["records"]
        return "beyond the inputs"

    return where


def _join_text(out: BinaryIO, rows: BinaryIO, preds: BinaryIO, summary: dict[str, Any], shard: dict[str, Any],
               prediction_columns: list[str], fields: int, skip: AbstractSet[int], tap: Tap | None = None) -> None:
    """Text in, the same text out: the shard's lines joined with the prediction lines as they are."""
    if summary["format"] == "csv":
        out.write((f"{summary.get('header')}," + ",".join(prediction_columns) + "\n").encode())
        for block in _join_csv(rows, preds, len(prediction_columns), shard["key"], fields=fields, skip=skip,
                               origin=_origin(summary, shard["key"]), tap=tap):
            out.write(block)
    else:
        _write_joined(out, _join_jsonl(rows, tapped_lines(preds, tap), prediction_columns, shard["key"], skip))


def _part_key(shard_key: str, fmt: str) -> str:
    """``part-00000.csv`` -> ``part-00000.parquet``: a part is named for its own format."""
    from airflow_bt.steps.typed_parts import EXTENSIONS

    return shard_key.rsplit(".", 1)[0] + EXTENSIONS[fmt]


def _typed_settings(store: Storage, summary: dict[str, Any], prediction_columns: list[str], output_format: str | None,
                    schema: dict[str, str] | None, prediction_types: dict[str, str] | None,
                    compression: str) -> TypedSettings | None:
    """How to type the parts, or None when text goes out as it came in (the lines are joined as they are)."""
    from airflow_bt.records.arrow_types import type_names_error
    from airflow_bt.steps.typed_parts import COMPRESSIONS, OUTPUT_FORMATS, TypedSettings, rows_schema

    fmt = summary["format"]
    input_format = summary.get("input_format", fmt)
    out = output_format or input_format
    if out not in OUTPUT_FORMATS:
        raise ValueError(f"postprocess.format must be one of {', '.join(OUTPUT_FORMATS)}; got {out!r}")
    if compression not in COMPRESSIONS:
        raise ValueError(f"postprocess.compression must be one of {', '.join(COMPRESSIONS)}; got {compression!r}")
    for name, types, allowed in (("prediction_types", prediction_types, prediction_columns), ("schema", schema, None)):
        error = type_names_error(types or {}, allowed=allowed)
        if error:
            raise ValueError(f"postprocess.{name}: {error}")
    if input_format == out and out != "parquet":
        return None
    rows, source = rows_schema(store, summary, dict(schema or {}))
    return TypedSettings(out, list(prediction_columns), dict(prediction_types or {}), compression, rows, source)


def _publish_errors(store: Storage, summary: dict[str, Any], found: dict[str, ShardPredictions],
                    attempt_prefix: str) -> dict[str, Any]:
    """Copy the quarantined input records and the model-rejected ones into the attempt's ``_errors/``."""
    errors: dict[str, Any] = {}
    if summary.get("errors_uri"):
        uri = join_uri(attempt_prefix, ERRORS_NAME, "bad-input.jsonl")
        with store.open_read(summary["errors_uri"]) as src, store.open_write(uri) as dst:
            while block := src.read(4 * 1024 * 1024):
                dst.write(block)
        errors["bad_input"] = uri
    rejected = [
        {**record, "shard": key, "input": record.get("input"), "origin": _origin(summary, key)(int(record["record"]))}
        for key, shard in found.items() for record in shard.rejected
    ]
    if rejected:
        uri = join_uri(attempt_prefix, ERRORS_NAME, "model-rejected.jsonl")
        store.put_bytes(uri, b"".join(json.dumps(r).encode() + b"\n" for r in rejected))
        errors["model_rejected"] = uri
    return errors


def publish_attempt(
    store: Storage,
    summary: dict[str, Any],
    predictions: str | list[str],
    attempt_prefix: str,
    latest_uri: str,
    *,
    prediction_columns: list[str],
    output_format: str | None = None,
    schema: dict[str, str] | None = None,
    prediction_types: dict[str, str] | None = None,
    compression: str = "zstd",
    checks: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
    logger: LogLike | None = None,
    statistics: bool = True,
    partition_column: tuple[str, Any] | None = None,
) -> dict[str, Any]:
    """Join predictions onto the shards' rows and publish them write-once under ``attempt_prefix``.

    ``predictions`` is the transform's output prefix (or the prefixes of a partial retry, see
    :func:`reconcile`). Records the shard step quarantined and records the model rejected
    (dead-letter) are not published as rows: they are copied to ``_errors/bad-input.jsonl`` and
    ``_errors/model-rejected.jsonl`` of the attempt and counted in the manifest. Returns the
    manifest that was published (and that ``_LATEST.json`` now points to).

    ``output_format`` (``csv``, ``jsonl`` or ``parquet``; default: the input's) chooses the parts'
    format. Parquet input or output, or a format other than the input's, writes typed parts
    (:mod:`airflow_bt.steps.typed_parts`): the input's columns with their types (from the Parquet
    files; for text input ``schema`` for the columns it names, the rest inferred from the first
    shard) plus one column per prediction of its ``prediction_types`` type (default ``float64``),
    Parquet compressed with ``compression`` (``zstd``, ``snappy`` or ``none``). The manifest records
    the schema. Text in, the same text out, joins the lines as they are.

    The prediction columns' statistics are computed on the way (:mod:`airflow_bt.steps.checks`) and
    recorded in the manifest; ``checks`` (``postprocess.checks``) judges them before ``_SUCCESS`` and raises
    :class:`~airflow_bt.steps.checks.PredictionCheckError` for a failed check with ``on_check_failure:
    fail`` (the attempt then has parts and a manifest, and no ``_SUCCESS``). ``statistics=False`` (without
    ``checks``) skips them: only to measure what they cost.

    ``partition_column`` (``(name, date)``, with ``publish.table``) adds that ``date32`` column, constant, to
    every row of the Parquet parts, so a table partitioned by it registers the parts as they are.
    """
    logger = logger or log
    started = time.monotonic()
    if not prediction_columns:
        raise ValueError("prediction_columns must name at least one column")
    fmt = summary["format"]
    typed = _typed_settings(store, summary, prediction_columns, output_format, schema, prediction_types, compression)
    if partition_column is not None:
        if typed is None or typed.output_format != "parquet":
            raise ValueError("publish.table registers Parquet parts: set postprocess.format: parquet")
        typed = dataclasses.replace(typed, constants=((partition_column[0], "date32", partition_column[1]),))
    error = checks_error(checks or {}, list(prediction_columns))
    if error:
        raise ValueError(f"postprocess.checks: {error}")
    stats = PredictionStats(list(prediction_columns), checks)
    tap = stats.add_lines if statistics or checks else None  # statistics=False: only to measure their cost
    found = reconcile(store, summary, predictions)
    header = summary.get("header")
    fields = csv_fields(header.encode()) if fmt == "csv" and header else 0
    parts = []
    for index, shard in enumerate(summary["shards"], start=1):
        part_key = _part_key(shard["key"], typed.output_format if typed else fmt)
        part_uri = join_uri(attempt_prefix, part_key)
        located = found[shard["key"]]
        skip = located.skip
        with contextlib.ExitStack() as stack:
            out = stack.enter_context(store.open_write(part_uri))
            if typed is not None:
                from airflow_bt.steps.typed_parts import write_typed_part

                write_typed_part(store, summary, shard, located.uri, out, typed, skip,
                                 observe=stats.add_arrays if tap else None)
            else:
                rows = stack.enter_context(store.open_read(shard["uri"]))
                preds = stack.enter_context(store.open_read(located.uri))
                _join_text(out, rows, preds, summary, shard, prediction_columns, fields, skip, tap=tap)
        parts.append({"key": part_key, "shard": shard["key"], "uri": part_uri, "rows": shard["records"] - len(skip)})
        failpoint("publish.after_part", part_uri)
        logger.info("published shard %d of %d: %s, %d rows", index, len(summary["shards"]), part_uri,
                    shard["records"] - len(skip))
    errors = _publish_errors(store, summary, found, attempt_prefix)

    rows_in = sum(s["records"] for s in summary["shards"])
    rejected = sum(len(p.rejected) for p in found.values())
    quarantined = int(summary.get("bad_records") or 0)
    manifest = {
        "attempt_prefix": attempt_prefix,
        "published_at": pendulum.now("UTC").to_iso8601_string(),
        "format": typed.output_format if typed else fmt,
        "input_format": summary.get("input_format", fmt),
        "columns": ([f["name"] for f in typed.describe()] if typed else
                    [*(header or "").split(","), *prediction_columns] if fmt == "csv" else None),
        **({"schema": typed.describe(), "schema_source": typed.schema_source} if typed else {}),
        **({"columns_sent": summary["columns"]} if summary.get("columns") else {}),  # what the model saw
        "prediction_columns": list(prediction_columns),
        "input_records": rows_in + quarantined,
        "quarantined": quarantined,
        "rows_in": rows_in,
        "rejected": rejected,
        "rows_out": rows_in - rejected,
        "errors": errors,
        "parts": parts,
        "inputs": summary["inputs"],
        "input_prefix": summary["input_prefix"],
        "shards": summary["shard_prefix"],
        "predictions": predictions if isinstance(predictions, str) else list(predictions),
        "publish_seconds": round(time.monotonic() - started, 3),
        **(metadata or {}),
    }
    failed = _judge(store, manifest, stats if tap else None, checks or {}, latest_uri, logger)
    store.put_bytes(join_uri(attempt_prefix, MANIFEST_NAME), json.dumps(manifest, indent=1, default=str).encode())
    if failed:
        raise PredictionCheckError(
            f"{len(failed)} prediction check(s) failed, so nothing was published ({attempt_prefix} has no "
            f"{SUCCESS_NAME}; its {MANIFEST_NAME} holds the statistics): "
            + "; ".join(r.message() for r in failed)
            + ". Fix the model or its input, or relax the setting (postprocess.checks.on_check_failure: warn "
              "publishes anyway)")
    failpoint("publish.before_success", attempt_prefix)
    store.put_bytes(join_uri(attempt_prefix, SUCCESS_NAME), b"")
    failpoint("publish.before_latest", attempt_prefix)
    moved = point_latest(store, latest_uri, manifest)
    if quarantined or rejected:
        logger.warning("not published as rows: %d input record(s) quarantined by the shard step, %d rejected by "
                       "the model; see %s", quarantined, rejected, ", ".join(errors.values()))
    logger.info("published %d rows to %s in %.2f s; %s %s", rows_in - rejected, attempt_prefix,
                time.monotonic() - started, LATEST_NAME,
                "points to it" if moved else "stays at an attempt that completed later")
    return manifest


def _judge(store: Storage, manifest: dict[str, Any], stats: PredictionStats | None, checks: dict[str, Any],
           latest_uri: str, logger: LogLike) -> list[CheckResult]:
    """Put the statistics and the checks' results in ``manifest``; the failures that stop the publication.
    ``stats`` is None when they were not computed (``statistics=False``, to measure their cost)."""
    if stats is None:
        return []
    statistics = stats.describe(manifest["rows_out"])
    manifest["statistics"] = statistics
    if not checks:
        return []
    drift = any({"max_mean_shift", "max_psi"} & set(spec) for spec in (checks.get("columns") or {}).values())
    previous = previous_statistics(store, latest_uri, int(checks.get("drift_lookback_days", 7))) if drift else None
    results = evaluate(checks, statistics, previous[1] if previous else None)
    manifest["checks"] = {"on_check_failure": checks.get("on_check_failure", "fail"),
                          "compared_with": previous[0] if previous else None,
                          "results": [r.as_dict() for r in results]}
    if drift and previous is None:
        logger.info("drift checks skipped: no published day within %s day(s) before this one",
                    checks.get("drift_lookback_days", 7))
    failed = [r for r in results if not r.passed]
    for result in results:
        (logger.warning if not result.passed else logger.info)("prediction check: %s", result.message())
    return failed if checks.get("on_check_failure", "fail") == "fail" else []


def previous_statistics(store: Storage, latest_uri: str, lookback_days: int) -> tuple[str, dict[str, Any]] | None:
    """``(day, statistics)`` of the last published day before this one (``.../dt=<day>/_LATEST.json``), looking
    back at most ``lookback_days`` days; None for another layout or when none was published."""
    import datetime as dt

    folder = latest_uri.rstrip("/").rsplit("/", 2)
    if len(folder) != 3 or not folder[1].startswith("dt="):
        return None
    try:
        day = dt.date.fromisoformat(folder[1][3:])
    except ValueError:
        return None
    for back in range(1, lookback_days + 1):
        earlier = (day - dt.timedelta(days=back)).isoformat()
        try:
            pointer = json.loads(store.read_bytes(f"{folder[0]}/dt={earlier}/{LATEST_NAME}"))
            statistics = json.loads(store.read_bytes(pointer["manifest"])).get("statistics")
        except ObjectNotFoundError:
            continue
        except (ValueError, KeyError, TypeError) as exc:  # an unreadable pointer or manifest: not a baseline
            log.warning("drift: dt=%s's %s or manifest cannot be read (%s); looking further back", earlier,
                        LATEST_NAME, exc)
            continue
        if statistics:
            return earlier, statistics
    return None


def point_latest(store: Storage, latest_uri: str, manifest: dict[str, Any]) -> bool:
    """Point ``_LATEST.json`` at a published attempt (one with ``_SUCCESS``), only forward.

    False when the pointer already names an attempt that completed later (a slower publisher of
    the same date lost the race): the pointer stays, the attempt stays published and readable.
    """
    attempt = manifest["attempt_prefix"]
    try:
        done = completed_at(store, attempt)
    except ObjectNotFoundError:
        raise RuntimeError(f"refusing to point {latest_uri} at {attempt}: it has no {SUCCESS_NAME}") from None
    pointer: dict[str, Any] = {
        "attempt_prefix": attempt,
        "manifest": join_uri(attempt, MANIFEST_NAME),
        "published_at": manifest["published_at"],
        "completed_at": done,
        "rows": manifest["rows_out"],
        **{k: manifest[k] for k in ("run_id", "try_number", "job_name") if k in manifest},
    }
    return move_latest_forward(store, latest_uri, pointer)


def read_latest(store: Storage, output_root: str) -> dict[str, Any] | None:
    """The pointer a reader follows, or None when nothing was published for the date."""
    try:
        return dict(json.loads(store.read_bytes(join_uri(output_root, LATEST_NAME))))
    except ObjectNotFoundError:
        return None
