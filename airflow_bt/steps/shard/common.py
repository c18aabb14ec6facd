"""What every module of the shard step shares: its error, the formats it writes, the longest line it reads."""

from __future__ import annotations

_MAX_LINE = 256 * 1024 * 1024  # a "line" longer than this is not line-delimited data
#: The shards' formats (what the container is sent) and their content types.
FORMATS = {"csv": "text/csv", "jsonl": "application/jsonlines"}
#: What a partition may hold: the shard formats, and Parquet (sharded into one of them).
INPUT_FORMATS = (*FORMATS, "parquet")


class ShardInputError(ValueError):
    """The input partition cannot be sharded as it is; the message names the object and the fix."""
