"""Fetching a model artifact (``model.tar.gz`` or a folder) into a local model directory, safely."""

from __future__ import annotations

import os
import posixpath
import shutil
import tarfile
from typing import BinaryIO

from airflow_bt.storage import as_prefix
from airflow_bt.transform.runtime.base import ModelRuntimeError, StorageResolver

TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar")


class UnsafeArchiveError(ModelRuntimeError):
    """An archive member would land outside the target directory, or is a link or a device."""


def _safe_relpath(name: str, source: str) -> str | None:
    """The normalized relative path for archive member ``name``; ``None`` for the root itself."""
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchiveError(f"{source}: refusing member {name!r}: absolute path")
    norm = posixpath.normpath(name.replace("\\", "/"))
    if norm == ".":
        return None
    if norm == ".." or norm.startswith("../"):
        raise UnsafeArchiveError(f"{source}: refusing member {name!r}: it escapes the model directory")
    return norm


def _target(dest: str, rel: str, name: str, source: str) -> str:
    root = os.path.realpath(dest)
    target = os.path.realpath(os.path.join(root, rel))
    if os.path.commonpath([root, target]) != root:
        raise UnsafeArchiveError(f"{source}: refusing member {name!r}: it escapes the model directory")
    return target


def safe_extract_tar(fileobj: BinaryIO, dest: str, *, source: str = "<archive>") -> int:
    """Extract a (possibly gzipped) tar stream into ``dest``; return the number of files.

    Streams (no seeking), so it works on an S3 body. Refuses, before writing it, any
    member with an absolute path or one that resolves outside ``dest``, and any link,
    device or FIFO; the whole artifact is then rejected with :class:`UnsafeArchiveError`.
    """
    os.makedirs(dest, exist_ok=True)
    files = 0
    try:
        with tarfile.open(fileobj=fileobj, mode="r|*") as tar:
            for member in tar:
                rel = _safe_relpath(member.name, source)
                if member.issym() or member.islnk():
                    raise UnsafeArchiveError(f"{source}: refusing member {member.name!r}: "
                                             "links are not allowed")
                if not (member.isdir() or member.isfile()):
                    raise UnsafeArchiveError(f"{source}: refusing member {member.name!r}: "
                                             "not a file or folder")
                if rel is None:
                    continue
                target = _target(dest, rel, member.name, source)
                if member.isdir():
                    os.makedirs(target, exist_ok=True)
                    continue
                os.makedirs(os.path.dirname(target), exist_ok=True)
                src = tar.extractfile(member)
                if src is None:  # pragma: no cover - isfile() members always have data
                    continue
                with src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
                files += 1
    except tarfile.TarError as exc:
        raise ModelRuntimeError(f"{source}: not a readable tar archive: {exc}") from exc
    return files


def fetch_model_dir(url: str, dest: str, storage_for: StorageResolver) -> None:
    """Make ``dest`` hold the model at ``url``: a (gzipped) tar archive object, or a folder prefix."""
    storage = storage_for(url)
    if url.endswith(TAR_SUFFIXES) or (not url.endswith("/") and storage.exists(url)):
        with storage.open_read(url) as stream:
            safe_extract_tar(stream, dest, source=url)
        return
    os.makedirs(dest, exist_ok=True)
    found = 0
    for obj in storage.list(as_prefix(url)):
        rel = _safe_relpath(obj.key, url)
        if rel is None:
            continue
        target = _target(dest, rel, obj.key, url)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with storage.open_read(obj.uri) as src, open(target, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
        found += 1
    if not found:
        raise ModelRuntimeError(f"no model artifact at {url}: "
                                "expected a model.tar.gz or a folder with the model")
