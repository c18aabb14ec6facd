"""Move every pointer of a scored day to the attempt ``_LATEST.json`` names: one truth for every reader.

``_LATEST.json`` is the pointer with a real compare-and-swap (:mod:`airflow_bt.steps.pointer`); the table
pointers follow it. :func:`follow_latest` reads it, moves each pointer that names another attempt there,
and reads it again: when it changed meanwhile (another publisher of the day completed later), it starts
over. A pointer never moves back: one that already names an attempt that completed later than the one
``_LATEST.json`` names is left alone (the publisher that moved ``_LATEST.json`` past it will come).

So after any interleaving of publishers, the last one to finish leaves every pointer at the attempt that
completed last. A publisher killed between its ``_SUCCESS`` and here leaves the tables one attempt
behind ``_LATEST.json`` until the next publication of that day (its task's retry) runs this again.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from airflow_bt.faults import failpoint
from airflow_bt.logs import LogLike
from airflow_bt.steps.pointer import attempt_order
from airflow_bt.storage.base import ObjectNotFoundError, Storage
from airflow_bt.tables.pointers import DayPointer

log = logging.getLogger(__name__)

#: Rounds of read-move-verify before giving up (each extra round means _LATEST.json moved meanwhile).
MAX_ROUNDS = 20


def _read(store: Storage, latest_uri: str) -> dict[str, Any] | None:
    try:
        return dict(json.loads(store.read_bytes(latest_uri)))
    except ObjectNotFoundError:
        return None


def _move_one(store: Storage, pointer: DayPointer, day: str, target: str, manifest: dict[str, Any],
              logger: LogLike) -> str:
    """Move ``pointer`` to ``target`` unless it names a later attempt; what it names afterwards."""
    for _ in range(MAX_ROUNDS):
        current = pointer.current(day)
        if current == target:
            return current
        if current is not None:
            theirs, ours = attempt_order(store, current), attempt_order(store, target)
            if theirs is not None and ours is not None and theirs > ours:
                logger.info("%s already names %s for %s, which completed after %s: it stays", pointer.name,
                            current, day, target)
                return current
        if pointer.move(day, target, manifest, expected=current):
            # read again on the next round: a pointer without a conditional write (a Glue partition) may have
            # been moved by another publisher between its own check and its write
            logger.info("%s now names %s for %s (was %s)", pointer.name, target, day, current or "nothing")
    raise RuntimeError(f"{pointer.name}: moved by others {MAX_ROUNDS} times while pointing {day} at {target}")


def follow_latest(store: Storage, latest_uri: str, day: str, pointers: list[DayPointer],
                  logger: LogLike | None = None) -> dict[str, str | None]:
    """Point every one of ``pointers`` at the attempt ``latest_uri`` names for ``day``; what each names then."""
    logger = logger or log
    named: dict[str, str | None] = {p.name: None for p in pointers}
    if not pointers:
        return named
    for _ in range(MAX_ROUNDS):
        latest = _read(store, latest_uri)
        if latest is None:
            return named
        target = str(latest["attempt_prefix"])
        manifest = dict(json.loads(store.read_bytes(latest["manifest"])))
        failpoint("publish.before_tables", target)
        for pointer in pointers:
            named[pointer.name] = _move_one(store, pointer, day, target, manifest, logger)
        failpoint("publish.after_tables", target)
        again = _read(store, latest_uri)
        if again is not None and again.get("attempt_prefix") == target:
            return named
        logger.info("%s moved while the tables followed it: following it again", latest_uri)
    raise RuntimeError(f"{latest_uri} kept moving while the tables followed it ({MAX_ROUNDS} rounds)")
