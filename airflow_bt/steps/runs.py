"""Read side of publication: the attempts of a date and the one ``_LATEST.json`` points to."""

from __future__ import annotations

import json
from typing import Any

from airflow_bt.steps.layout import LATEST_NAME, MANIFEST_NAME, SUCCESS_NAME
from airflow_bt.steps.publish import read_latest
from airflow_bt.storage.base import ObjectNotFoundError, Storage
from airflow_bt.storage.uris import as_prefix, join_uri


def date_output_root(output_root: str, ds: str) -> str:
    """``<root>/output/churn`` + ``2026-06-24`` -> ``<root>/output/churn/dt=2026-06-24/``."""
    return as_prefix(join_uri(output_root, f"dt={ds}"))


def list_attempts(store: Storage, date_root: str) -> list[dict[str, Any]]:
    """Every attempt folder of the date, complete or not, oldest publication first."""
    latest = read_latest(store, date_root) or {}
    folders: dict[str, set[str]] = {}
    for obj in store.list(date_root):
        if "/" in obj.key:
            folder, name = obj.key.split("/", 1)
            folders.setdefault(folder, set()).add(name)
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
        attempts.append(entry)
    attempts.sort(key=lambda a: (a.get("published_at") or "", a["attempt"]))
    return attempts


def format_attempts(attempts: list[dict[str, Any]], date_root: str) -> str:
    if not attempts:
        return f"no attempts under {date_root}"
    rows = [("", "attempt", "run id", "try", "rows", "model", "published at", "complete")]
    for a in attempts:
        rows.append(("*" if a["latest"] else "", a["attempt"], str(a.get("run_id") or "-"),
                     str(a.get("try_number") or "-"), str(a.get("rows") if a.get("rows") is not None else "-"),
                     str(a.get("model") or "-"), str(a.get("published_at") or "-"),
                     "yes" if a["complete"] else "NO"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.append(f"* = the attempt {join_uri(date_root, LATEST_NAME)} points to")
    return "\n".join(lines)
