"""The storage interface: list, stream, and write objects by URI, with create-only writes."""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO


class StorageError(Exception):
    """A storage operation failed in a way the caller should report as-is."""


class ObjectExistsError(StorageError, FileExistsError):
    """A create-only write found the object already there: a collision, never an overwrite."""

    def __init__(self, uri: str) -> None:
        super().__init__(f"{uri} already exists; create-only writes never overwrite an object")
        self.uri = uri


class ObjectNotFoundError(StorageError, FileNotFoundError):
    """The object does not exist."""

    def __init__(self, uri: str) -> None:
        super().__init__(f"{uri} does not exist")
        self.uri = uri


class PreconditionFailedError(StorageError):
    """A conditional write found the object other than expected: another writer got there first."""

    def __init__(self, uri: str) -> None:
        super().__init__(f"{uri} changed since it was read; read it again and decide again")
        self.uri = uri


@dataclass(frozen=True)
class Versioned:
    """An object's bytes and the version they were read at (S3 ETag; for files inode-mtime-size)."""

    data: bytes
    version: str


@dataclass(frozen=True)
class ObjectInfo:
    """One object found by :meth:`Storage.list`.

    ``key`` is relative to the listed prefix (``a/b.csv``), ``uri`` is absolute.
    ``etag`` is the S3 ETag or, for files, ``<size>-<mtime_ns>``.
    """

    uri: str
    key: str
    size: int
    etag: str
    mtime: float


class Storage(abc.ABC):
    """One scheme's objects. Instances are cheap; get one with :func:`airflow_bt.storage.for_uri`."""

    scheme: str

    @abc.abstractmethod
    def list(self, prefix_uri: str) -> Iterator[ObjectInfo]:
        """Every object below ``prefix_uri`` (a folder-like prefix), recursively, sorted by key."""

    @abc.abstractmethod
    def open_read(self, uri: str) -> contextlib.AbstractContextManager[BinaryIO]:
        """A binary stream of the object; raises :class:`ObjectNotFoundError`."""

    def open_ranged(self, obj: ObjectInfo) -> contextlib.AbstractContextManager[BinaryIO]:
        """A seekable binary stream of the object listed as ``obj``: each read fetches only the bytes asked for.

        For columnar formats (Parquet), which read a footer and then the column chunks they need.
        Files are seekable already; :class:`~airflow_bt.storage.s3.S3Storage` issues ranged GETs
        pinned to ``obj.etag``, so an object replaced while it is read fails rather than mixing
        two versions.
        """
        return self.open_read(obj.uri)

    @abc.abstractmethod
    def open_write(self, uri: str, *, durable: bool = True) -> contextlib.AbstractContextManager[BinaryIO]:
        """A binary stream that becomes the object, create-only, when the block exits cleanly.

        Nothing is visible at ``uri`` before the block ends; on an exception nothing is written.
        Raises :class:`ObjectExistsError` if the object exists when it is committed.
        ``durable=False`` lets a file skip ``fsync`` before it becomes visible: for scratch
        objects a later step checks anyway, never for published ones (S3 puts are always durable).
        """

    @abc.abstractmethod
    def read_versioned(self, uri: str) -> Versioned | None:
        """The object's bytes and version, or None if it does not exist. Only for pointers."""

    @abc.abstractmethod
    def replace_if(self, uri: str, data: bytes, expected_version: str | None) -> None:
        """Atomically write ``uri`` if it is still at ``expected_version`` (None: if it does not exist).

        Compare-and-swap for pointers such as ``_LATEST.json``: raises :class:`PreconditionFailedError`
        when another writer changed the object since :meth:`read_versioned`, so no update is lost.
        """

    @abc.abstractmethod
    def exists(self, uri: str) -> bool:
        """Whether the object exists."""

    @abc.abstractmethod
    def stat(self, uri: str) -> ObjectInfo:
        """Size, etag and mtime of one object; raises :class:`ObjectNotFoundError`."""

    def portable(self) -> Storage:
        """A picklable equivalent that needs no Airflow connection lookup (for worker processes)."""
        return self

    def put_bytes(self, uri: str, data: bytes) -> None:
        """Create-only write of a small object."""
        with self.open_write(uri) as out:
            out.write(data)

    def read_bytes(self, uri: str) -> bytes:
        with self.open_read(uri) as src:
            return src.read()

    @abc.abstractmethod
    def delete_objects(self, uris: Sequence[str]) -> None:
        """Delete these objects (a missing one is no error). Only the explicit, opt-in cleanup of scratch
        (``work/``) prefixes calls it (:mod:`airflow_bt.steps.retention`): published objects are never deleted."""

    def has_objects(self, prefix_uri: str) -> bool:
        return next(iter(self.list(prefix_uri)), None) is not None
