"""``CompressionType``: streaming decompression of input objects."""

from __future__ import annotations

import gzip
from typing import BinaryIO, cast

COMPRESSION_TYPES = ("None", "Gzip")
"""The ``TransformInput.CompressionType`` values."""


def decompressed(stream: BinaryIO, compression_type: str | None) -> BinaryIO:
    """``stream`` itself for ``None``, a streaming gzip reader over it for ``Gzip``.

    Concatenated gzip members are read as one stream, like ``gzip -d``.
    """
    if compression_type in (None, "None"):
        return stream
    if compression_type == "Gzip":
        return cast(BinaryIO, gzip.GzipFile(fileobj=stream, mode="rb"))
    raise ValueError(f"unknown CompressionType {compression_type!r}; "
                     f"expected one of {', '.join(COMPRESSION_TYPES)}")
