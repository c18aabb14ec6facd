"""Read side of publication: the attempts of a date and the one ``_LATEST.json`` points to."""

from __future__ import annotations

import json
from typing import Any

from airflow_bt.steps.layout import LATEST_NAME, MANIFEST_NAME, SUCCESS_NAME
from airflow_bt.steps.pointer import completed_at, completion_order
from airflow_bt.steps.publish import read_latest
from airflow_bt.storage.base import ObjectNotFoundError, Storage
from airflow_bt.storage.uris import as_prefix, join_uri


def date_output_root(output_root: str, ds: str) -> str:
    """``<root>/output/churn`` + ``2026-06-24`` -> ``<root>/output/churn/dt=2026-06-24/``."""
    return as_prefix(join_uri(output_root, f"dt={ds}"))


def list_attempts(store: Storage, date_root: str) -> list[dict[str, Any]]:
    """Every attempt folder of the date, complete or not, in the order they completed.

    Complete attempts are ordered the way ``_LATEST.json`` moves (:func:`completion_order`: their
    ``_SUCCESS`` timestamp, then ``published_at``, then the prefix), so the last complete row is
    the one the pointer names once every publisher has pointed. An incomplete attempt sorts by its
    last write. ``latest`` marks the attempt the pointer names; ``newest_complete`` the last
    complete one (the two differ only while a publisher is between ``_SUCCESS`` and its pointer
    write, or if it died there).
    """
    latest = read_latest(store, date_root) or {}
    folders: dict[str, set[str]] = {}
    last_write: dict[str, float] = {}
    for obj in store.list(date_root):
        if "/" in obj.key:
            folder, name = obj.key.split("/", 1)
            folders.setdefault(folder, set()).add(name)
            last_write[folder] = max(last_write.get(folder, obj.mtime), obj.mtime)
    attempts = []
    for folder, names in sorted(folders.items()):
        prefix = as_prefix(join_uri(date_root, folder))
        entry: dict[str, Any] = {"attempt": folder, "prefix": prefix, "complete": SUCCESS_NAME in names,
                                 "latest": latest.get("attempt_prefix") == prefix}
        if MANIFEST_NAME in names:
            try:
                manifest = json.loads(store.read_bytes(join_uri(prefix, MANIFEST_NAME)))
            except (ObjectNotFoundError, ValueError):
                manifest = {}
            model = manifest.get("model") or {}
            entry.update(run_id=manifest.get("run_id"), try_number=manifest.get("try_number"),
                         rows=manifest.get("rows_out"), model=model.get("name"),
                         published_at=manifest.get("published_at"), job_name=manifest.get("job_name"))
        if entry["complete"]:
            try:  # the same timestamp the pointer's writers compare (a listing's may be finer than a HEAD's)
                entry["completed_at"] = completed_at(store, prefix)
            except ObjectNotFoundError:
                entry["complete"] = False  # removed since the listing
        attempts.append(entry)
    attempts.sort(key=lambda a: completion_order(a.get("completed_at", last_write[a["attempt"]]),
                                                 a.get("published_at") or "", a["prefix"]))
    complete = [a for a in attempts if a["complete"]]
    for a in attempts:
        a["newest_complete"] = bool(complete) and a is complete[-1]
    return attempts


def format_attempts(attempts: list[dict[str, Any]], date_root: str, *, table: str | None = None) -> str:
    """The attempts as a text table; with ``table``, each one's snapshot id (``+``: the table's current one)."""
    if not attempts:
        return f"no attempts under {date_root}"
    rows = [("", "attempt", "run id", "try", "rows", "model", "published at", "complete",
             *(("snapshot",) if table else ()))]
    for a in attempts:
        snapshot = (f"{a['snapshot_id']}{' +' if a.get('table_current') else ''}" if a.get("snapshot_id") else "-",)
        rows.append(("*" if a["latest"] else "", a["attempt"], str(a.get("run_id") or "-"),
                     str(a.get("try_number") or "-"), str(a.get("rows") if a.get("rows") is not None else "-"),
                     str(a.get("model") or "-"), str(a.get("published_at") or "-"),
                     "yes" if a["complete"] else "NO", *(snapshot if table else ())))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.append(f"* = the attempt {join_uri(date_root, LATEST_NAME)} points to"
                 + (f"; + = the attempt {table}'s current snapshot holds for the day" if table else ""))
    newest = next((a for a in attempts if a["newest_complete"]), None)
    if newest is not None and not newest["latest"]:
        lines.append(f"note: {newest['attempt']} completed last but {LATEST_NAME} does not name it yet: its "
                     "publisher is between _SUCCESS and its pointer write, or stopped there (the next publish "
                     "of the date moves the pointer)")
    return "\n".join(lines)
