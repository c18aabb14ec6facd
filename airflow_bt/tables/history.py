"""Read side of the tables: which snapshot published which attempt, and what a day holds now."""

from __future__ import annotations

from typing import Any

from airflow_bt.tables.iceberg import PARTITION_COLUMN, SUMMARY_PREFIX, IcebergTablePointer, publication


def attempt_snapshots(table: Any) -> dict[str, int]:
    """``{attempt prefix: snapshot id}`` of every snapshot a publication committed (the table's history)."""
    found: dict[str, int] = {}
    for snapshot in table.snapshots():
        prefix = publication(snapshot).get(SUMMARY_PREFIX + "attempt_prefix")
        if prefix:
            found[prefix] = snapshot.snapshot_id
    return found


def day_state(table: Any, day: str) -> dict[str, Any]:
    """What the table's current snapshot holds for ``day``: its snapshot id, the attempt, files and rows."""
    files = IcebergTablePointer.day_files(table, day)
    snapshot = table.current_snapshot()
    return {
        "snapshot_id": snapshot.snapshot_id if snapshot is not None else None,
        "attempt_prefix": IcebergTablePointer.named(table, day, files),
        "files": sorted(f.file_path for f in files),
        "rows": sum(int(f.record_count) for f in files),
        "partition_column": PARTITION_COLUMN,
    }
