"""What a day pointer is: something that names one attempt of a scored day, and can be moved to another.

``_LATEST.json`` is the pointer plain file readers follow; a table's current snapshot (Iceberg) and a catalog
partition (Glue/Hive) are the ones engines follow. :mod:`airflow_bt.tables.sync` keeps them agreeing.
"""

from __future__ import annotations

from typing import Any, Protocol


class DayPointer(Protocol):
    """A pointer that names, for each scored day, the attempt prefix engines read."""

    #: For logs and errors: ``iceberg table scoring.churn``, ``glue partition db.table``.
    name: str

    def current(self, day: str) -> str | None:
        """The attempt prefix (``.../dt=<day>/<slug>-<try>/``) the pointer names for ``day``, or None."""
        ...

    def move(self, day: str, attempt_prefix: str, manifest: dict[str, Any], *, expected: str | None) -> bool:
        """Point ``day`` at ``attempt_prefix`` (whose ``_manifest.json`` is ``manifest``).

        ``expected`` is what :meth:`current` returned when the caller decided to move: a pointer with a
        conditional write (an Iceberg commit) returns False without moving when it no longer names
        ``expected``, and the caller decides again. Returns True when the pointer names ``attempt_prefix``.
        """
        ...
