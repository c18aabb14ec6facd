"""``file://`` storage: create-only commits by hard-linking a finished temp file into place."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from typing import BinaryIO

from airflow_bt.storage.base import (
    ObjectExistsError,
    ObjectInfo,
    ObjectNotFoundError,
    PreconditionFailedError,
    Storage,
    Versioned,
)
from airflow_bt.storage.uris import as_prefix, file_path

_TMP_PREFIX = ".airflow-bt-tmp-"
log = logging.getLogger(__name__)


def _current_umask() -> int:
    """The process umask, read once at import: from /proc on Linux (no window in which another thread
    sees a changed umask), else by setting it and setting it straight back."""
    with contextlib.suppress(OSError, ValueError, StopIteration), open("/proc/self/status") as status:
        return int(next(line for line in status if line.startswith("Umask:")).split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: Objects get the mode a plain ``open()`` would give them (``mkstemp`` makes them 0600, which
#: readers running as another user cannot read).
_FILE_MODE = 0o666 & ~_current_umask()


def _temp_file(folder: str) -> tuple[int, str]:
    fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=folder)
    os.fchmod(fd, _FILE_MODE)
    return fd, tmp


def _version(st: os.stat_result) -> str:
    # a replace gives a new inode, so two writes never share a version even within one mtime tick
    return f"{st.st_ino}-{st.st_mtime_ns}-{st.st_size}"


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
                try:
                    st = os.stat(full)
                except FileNotFoundError:  # removed while listing, or a symlink whose target is gone
                    log.warning("skipping %s: it vanished while listing, or is a link to nothing", full)
                    continue
                found.append((os.path.relpath(full, root).replace(os.sep, "/"), st))
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
        fd, tmp = _temp_file(folder)
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

    def read_versioned(self, uri: str) -> Versioned | None:
        try:
            fh = open(file_path(uri), "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            return None
        with fh:
            version = _version(os.fstat(fh.fileno()))
            return Versioned(fh.read(), version)

    def replace_if(self, uri: str, data: bytes, expected_version: str | None) -> None:
        path = file_path(uri)
        folder = os.path.dirname(path)
        os.makedirs(folder, exist_ok=True)
        # Writers of one pointer take turns on a lock file beside it (an flock: released if a writer
        # dies); readers never lock, since os.replace swaps the whole file at once.
        lock_path = os.path.join(folder, f"{_TMP_PREFIX}lock-{os.path.basename(path)}")
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                current = _version(os.stat(path))
            except FileNotFoundError:
                current = None
            if current != expected_version:
                raise PreconditionFailedError(uri)
            fd, tmp = _temp_file(folder)
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(data)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(tmp, path)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)

    def delete_objects(self, uris: Sequence[str]) -> None:
        folders = set()
        for uri in uris:
            path = file_path(uri)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            folders.add(os.path.dirname(path))
        for folder in sorted(folders, key=len, reverse=True):  # the folders they leave empty, deepest first
            while True:
                try:
                    os.rmdir(folder)
                except OSError:  # not empty (or gone): stop climbing
                    break
                folder = os.path.dirname(folder)

    def exists(self, uri: str) -> bool:
        return os.path.isfile(file_path(uri))
