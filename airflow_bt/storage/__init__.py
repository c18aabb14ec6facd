"""Layer 2: one small interface over ``file://`` and ``s3://`` URIs.

>>> store = for_uri("file:///tmp/x/")
"""

from __future__ import annotations

from airflow_bt.storage.base import (
    ObjectExistsError,
    ObjectInfo,
    ObjectNotFoundError,
    PreconditionFailedError,
    Storage,
    StorageError,
    Versioned,
)
from airflow_bt.storage.uris import as_prefix, file_path, join_uri, scheme_of, split_s3


def for_uri(uri: str, *, aws_conn_id: str | None = "aws_default") -> Storage:
    """The storage that serves ``uri``'s scheme. ``aws_conn_id`` is used for ``s3://`` only."""
    scheme = scheme_of(uri)
    if scheme == "file":
        from airflow_bt.storage.local import LocalStorage

        return LocalStorage()
    from airflow_bt.storage.s3 import S3Storage

    return S3Storage(aws_conn_id=aws_conn_id)


__all__ = [
    "ObjectExistsError",
    "ObjectInfo",
    "ObjectNotFoundError",
    "PreconditionFailedError",
    "Storage",
    "StorageError",
    "Versioned",
    "as_prefix",
    "file_path",
    "for_uri",
    "join_uri",
    "scheme_of",
    "split_s3",
]
