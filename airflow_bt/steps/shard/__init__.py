"""The shard step: stream a date partition's objects into N shard objects of about equal size.

CSV headers are stripped (Batch Transform does not skip them) and recorded; every input
file must carry the same header. Records keep their order: shard 0 holds the first ones.
Memory is constant in the input size: objects are copied in blocks and cut at newlines.

Sizes are decompressed sizes: a ``.gz`` object is read through once first to measure it (gzip
records the size of its last member only, modulo 4 GiB). Every shard but the last is cut at the
first newline past the target (total / N), so no shard exceeds it by more than one record, and
no shard is bigger than :data:`MAX_SHARD_BYTES`, below S3's 5 GiB limit for a single PUT.

Speed: blocks are read into two reused buffers (no fresh pages to fault in per block) and
written, and shards committed (fsync, or an upload), by one background I/O thread while the
next block is read and counted. Counting records is most of the step's CPU: it uses numpy's
vectorised compare (~8x ``bytes.count``) when numpy is already loaded or the partition is big
enough to repay importing it (:data:`NUMPY_MIN_BYTES`), else ``bytearray.replace`` (~1.7x).

The step lives in a few modules: :mod:`.partition` runs it (:func:`shard_partition`: plan, read,
summary), :mod:`.inputs` lists, opens and measures the input objects, :mod:`.reader` reads them in
blocks into the shards that :mod:`.sink` writes, :mod:`.quarantine` handles bad records,
:mod:`.origins` maps shards back to inputs, and :mod:`.common` holds what they share.
"""

from __future__ import annotations

from airflow_bt.steps.shard.common import FORMATS, ShardInputError
from airflow_bt.steps.shard.inputs import detect_format, is_data_key, list_inputs
from airflow_bt.steps.shard.origins import shard_origins
from airflow_bt.steps.shard.partition import BLOCK_BYTES, MAX_SHARD_BYTES, NUMPY_MIN_BYTES, shard_partition

__all__ = [
    "BLOCK_BYTES",
    "FORMATS",
    "MAX_SHARD_BYTES",
    "NUMPY_MIN_BYTES",
    "ShardInputError",
    "detect_format",
    "is_data_key",
    "list_inputs",
    "shard_origins",
    "shard_partition",
]
