"""Failpoints: named places in the steps where a fault test can SIGKILL the task process, once.

Off unless ``AIRFLOW_BT_FAILPOINTS`` is set (then each call is one environment lookup and a
string compare). The variable lists ``<point>[@<token>]`` items separated by commas; an item
fires when the point's name matches and ``<token>`` occurs in the ``where`` the call site
passes (an object or prefix URI, so ``@dt=2026-06-01`` picks one date's run). Each item fires
once: before killing, it creates a marker file in ``AIRFLOW_BT_FAILPOINT_DIR`` (required), so
the task's retry runs past the same point. Used by ``tests/faults``; the points are listed in
``docs/reliability.md``.

Points:

- ``shard.after_shard`` -- a shard object is committed, the step goes on
- ``shard.before_summary`` -- every shard and the manifest are written, the summary is not
- ``shard.before_return`` -- the summary is written, the task has not returned (no XCom)
- ``transform.after_create`` -- the job is created or found, the task has not waited for it yet
- ``transform.after_output`` -- a ``.out`` object is committed (local engine, in the task's process)
- ``transform.before_return`` -- the job is complete, the task has not returned
- ``publish.after_part`` -- a published part is committed, the step goes on
- ``publish.before_success`` -- the parts and ``_manifest.json`` are written, ``_SUCCESS`` is not
- ``publish.before_latest`` -- ``_SUCCESS`` is written, ``_LATEST.json`` still points at the old attempt
- ``publish.before_tables`` -- ``_LATEST.json`` names the attempt, the table(s) do not yet (``publish.table``)
- ``publish.after_tables`` -- the table(s) name the attempt too, the task has not returned
"""

from __future__ import annotations

import hashlib
import os
import signal
from pathlib import Path

FAILPOINTS_ENV = "AIRFLOW_BT_FAILPOINTS"
FAILPOINT_DIR_ENV = "AIRFLOW_BT_FAILPOINT_DIR"


def failpoint(name: str, where: str = "") -> None:
    """SIGKILL this process if ``name`` (with its token found in ``where``) is armed and has not fired yet."""
    spec = os.environ.get(FAILPOINTS_ENV)
    if not spec:
        return
    for item in (part.strip() for part in spec.split(",")):
        point, _, token = item.partition("@")
        if point != name or (token and token not in where):
            continue
        folder = os.environ.get(FAILPOINT_DIR_ENV)
        if not folder:
            raise RuntimeError(f"{FAILPOINTS_ENV} is set but {FAILPOINT_DIR_ENV} is not: failpoints fire once "
                               "each and need a folder for their markers")
        marker = Path(folder) / f"{name}-{hashlib.sha1(item.encode()).hexdigest()[:10]}.fired"
        try:
            marker.touch(exist_ok=False)
        except FileExistsError:
            continue  # fired before: this is the retry
        os.kill(os.getpid(), signal.SIGKILL)
