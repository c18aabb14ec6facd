"""``file://`` storage: create-only commits by hard-linking a finished temp file into place."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from typing import BinaryIO

from airflow_bt.storage.base import ObjectExistsError, ObjectInfo, ObjectNotFoundError, Storage
from airflow_bt.storage.uris import as_prefix, file_path

_TMP_PREFIX = ".airflow-bt-tmp-"


class LocalStorage(Storage):
    """Objects are files; prefixes are folders. Temp files start with ``.airflow-bt-tmp-`` and are never listed."""

    scheme = "file"

    def list(self, prefix_uri: str) -> Iterator[ObjectInfo]:
        root = file_path(as_prefix(prefix_uri))
        if not os.path.isdir(root):
            return
        found: list[tuple[str, os.stat_result]] = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in filenames:
                if name.startswith(_TMP_PREFIX):
                    continue
                full = os.path.join(dirpath, name)
                found.append((os.path.relpath(full, root).replace(os.sep, "/"), os.stat(full)))
        base = as_prefix(prefix_uri)
        for key, st in sorted(found):
            yield ObjectInfo(
                uri=base + key, key=key, size=st.st_size, etag=f"{st.st_size}-{st.st_mtime_ns}",
                mtime=st.st_mtime,
            )

    def stat(self, uri: str) -> ObjectInfo:
        path = file_path(uri)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise ObjectNotFoundError(uri) from None
        return ObjectInfo(uri=uri, key=os.path.basename(path), size=st.st_size,
                          etag=f"{st.st_size}-{st.st_mtime_ns}", mtime=st.st_mtime)

    @contextlib.contextmanager
    def open_read(self, uri: str) -> Iterator[BinaryIO]:
        try:
            fh = open(file_path(uri), "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            raise ObjectNotFoundError(uri) from None
        with fh:
            yield fh

    @contextlib.contextmanager
    def open_write(self, uri: str, *, durable: bool = True) -> Iterator[BinaryIO]:
        path = file_path(uri)
        folder = os.path.dirname(path)
        os.makedirs(folder, exist_ok=True)
        if os.path.lexists(path):
            raise ObjectExistsError(uri)
        fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=folder)
        try:
            with os.fdopen(fd, "wb") as out:
                yield out
                out.flush()
                if durable:
                    os.fsync(out.fileno())
            try:
                os.link(tmp, path)  # atomic and fails if the name exists: create-only
            except FileExistsError:
                raise ObjectExistsError(uri) from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def replace_bytes(self, uri: str, data: bytes) -> None:
        path = file_path(uri)
        folder = os.path.dirname(path)
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=folder)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def exists(self, uri: str) -> bool:
        return os.path.isfile(file_path(uri))
