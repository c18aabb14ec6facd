"""Helpers that shape test input data."""

from __future__ import annotations

from pathlib import Path


def corrupt_tenure(path: Path, line: int = 5, value: str = "twelve") -> None:
    """Make one row of a demo CSV unscorable: a non-numeric ``tenure_months``."""
    lines = path.read_text().splitlines(keepends=True)
    fields = lines[line].split(",")
    fields[4] = value
    lines[line] = ",".join(fields)
    path.write_text("".join(lines))
