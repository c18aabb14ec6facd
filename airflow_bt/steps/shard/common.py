"""What every module of the shard step shares: its error, the formats it writes, the longest line it reads."""

from __future__ import annotations

_MAX_LINE = 256 * 1024 * 1024  # a "line" longer than this is not line-delimited data
FORMATS = {"csv": "text/csv", "jsonl": "application/jsonlines"}


class ShardInputError(ValueError):
    """The input partition cannot be sharded as it is; the message names the object and the fix."""
