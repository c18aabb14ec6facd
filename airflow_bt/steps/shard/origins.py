"""Where a shard's records came from: shard keys mapped back onto input objects and record numbers."""

from __future__ import annotations

from typing import Any


def shard_origins(summary: dict[str, Any]) -> dict[str, str]:
    """For each shard key, which input objects (and record numbers) its records came from.

    Shards hold the partition's records in input order, so a shard's record range maps back
    onto the inputs' ranges: ``part-00001.csv`` -> ``records 50001-100000 of the partition:
    customers-0003.csv (records 1-25000), customers-0004.csv (1-25000)``.
    """
    spans: list[tuple[int, int, str]] = []  # [start, end) of each input in partition record numbers
    start = 0
    for item in summary["inputs"]:
        spans.append((start, start + item["records"], item["uri"].rsplit("/", 1)[-1]))
        start += item["records"]
    origins: dict[str, str] = {}
    first = 0
    for shard in summary["shards"]:
        last = first + shard["records"]
        pieces = [
            f"{name} (records {max(first, lo) - lo + 1}-{min(last, hi) - lo})"
            for lo, hi, name in spans
            if lo < last and hi > first
        ]
        origins[shard["key"]] = f"records {first + 1}-{last} of the partition: {', '.join(pieces)}"
        first = last
    return origins
