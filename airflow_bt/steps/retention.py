"""Retention of scratch: delete the ``work/`` folders of runs whose day is published, once they are old.

Every attempt keeps its shards (a full copy of the input) and its raw predictions under
``<root>/work/<model>/dt=<day>/<run slug>/``. They are scratch: publish copies what readers need into the
attempt folder under ``output/``, and nothing reads ``work/`` after that. A run folder is deleted only if

- its day has a complete publication (``output/<model>/dt=<day>/_LATEST.json`` names an attempt with
  ``_SUCCESS``), so a failed day keeps what a rerun or a post-mortem needs;
- nothing in it was written for ``older_than`` (its newest object's age), so no running run is using it —
  and no local transform job of it lacks its end record (``transform/<job>.job.json`` without
  ``.end.json``: the job may still be running).

Nothing under ``output/`` (or a catalog) is ever deleted, and :func:`plan_retention` alone deletes
nothing: :func:`apply_retention` deletes what a plan marked, logging every folder.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from airflow_bt.logs import LogLike
from airflow_bt.steps.layout import LATEST_NAME, SUCCESS_NAME
from airflow_bt.storage.base import ObjectInfo, ObjectNotFoundError, Storage
from airflow_bt.storage.uris import as_prefix, join_uri

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([dhm])\s*$")
_SECONDS = {"d": 86400, "h": 3600, "m": 60}


def parse_age(text: str) -> float:
    """``14d``, ``36h``, ``90m`` -> seconds."""
    match = _DURATION.match(str(text))
    if not match:
        raise ValueError(f"expected an age such as 14d, 36h or 90m, got {text!r}")
    return float(match.group(1)) * _SECONDS[match.group(2)]


@dataclass
class RunFolder:
    """One run's scratch folder and what the plan decided for it."""

    prefix: str
    day: str
    objects: list[ObjectInfo] = field(default_factory=list)
    delete: bool = False
    reason: str = ""

    @property
    def size(self) -> int:
        return sum(o.size for o in self.objects)

    @property
    def newest(self) -> float:
        return max((o.mtime for o in self.objects), default=0.0)

    def as_dict(self) -> dict[str, Any]:
        return {"prefix": self.prefix, "day": self.day, "objects": len(self.objects), "bytes": self.size,
                "delete": self.delete, "reason": self.reason}


def _published(store: Storage, output_root: str, day: str) -> bool:
    try:
        pointer = json.loads(store.read_bytes(join_uri(output_root, f"dt={day}", LATEST_NAME)))
        return store.exists(join_uri(pointer["attempt_prefix"], SUCCESS_NAME))
    except (ObjectNotFoundError, KeyError, ValueError):
        return False


def _job_running(objects: Iterable[ObjectInfo]) -> str | None:
    keys = {o.key for o in objects}
    for key in sorted(keys):
        if key.endswith(".job.json") and key[: -len(".job.json")] + ".end.json" not in keys:
            return key
    return None


def model_roots(root: str, model: str) -> tuple[str, str]:
    """``(work root, output root)`` of a model in the default layout: ``<root>/work/<model>/`` and
    ``<root>/output/<model>/``."""
    return as_prefix(join_uri(root, "work", model)), as_prefix(join_uri(root, "output", model))


def plan_retention(store: Storage, work_root: str, output_root: str, older_than: float, *,
                   now: float | None = None) -> list[RunFolder]:
    """Every run folder under ``work_root`` (``<work root>/dt=<day>/<run>/``), each marked ``delete`` or kept
    with its reason; a day is published when ``<output_root>/dt=<day>/_LATEST.json`` names a complete attempt."""
    now = time.time() if now is None else now
    base = as_prefix(work_root)
    folders: dict[str, RunFolder] = {}
    for obj in store.list(base):
        parts = obj.key.split("/")
        if len(parts) < 3 or not parts[0].startswith("dt="):
            continue  # not <dt=day>/<run>/...: not a run folder this package wrote
        prefix = as_prefix(join_uri(base, parts[0], parts[1]))
        relative = ObjectInfo(obj.uri, "/".join(parts[2:]), obj.size, obj.etag, obj.mtime)
        folders.setdefault(prefix, RunFolder(prefix, parts[0][3:])).objects.append(relative)
    published: dict[str, bool] = {}
    for folder in folders.values():
        age = now - folder.newest
        running = _job_running(folder.objects)
        if folder.day not in published:
            published[folder.day] = _published(store, output_root, folder.day)
        if age < older_than:
            folder.reason = f"last written {age / 86400:.1f} day(s) ago (keep for {older_than / 86400:g})"
        elif running:
            folder.reason = f"local transform job {running} has no end record: it may be running"
        elif not published[folder.day]:
            folder.reason = f"dt={folder.day} has no complete publication (kept for a rerun)"
        else:
            folder.delete = True
            folder.reason = f"dt={folder.day} is published; last written {age / 86400:.1f} days ago"
    return sorted(folders.values(), key=lambda f: f.prefix)


def apply_retention(store: Storage, folders: list[RunFolder], log: LogLike) -> dict[str, int]:
    """Delete the folders the plan marked (every one logged); returns counts."""
    deleted = objects = size = 0
    for folder in folders:
        if not folder.delete:
            continue
        if "/work/" not in folder.prefix:
            raise RuntimeError(f"refusing to delete {folder.prefix}: retention deletes under work/ only")
        store.delete_objects([o.uri for o in folder.objects])
        log.info("deleted %s: %d object(s), %.1f MB (%s)", folder.prefix, len(folder.objects), folder.size / 1e6,
                 folder.reason)
        deleted, objects, size = deleted + 1, objects + len(folder.objects), size + folder.size
    return {"folders": deleted, "objects": objects, "bytes": size}
