"""URI helpers shared by every layer: parse, join, and make folder-like prefixes."""

from __future__ import annotations

from urllib.parse import urlsplit

SUPPORTED_SCHEMES = ("file", "s3")


def scheme_of(uri: str) -> str:
    scheme = urlsplit(uri).scheme
    if scheme not in SUPPORTED_SCHEMES:
        raise ValueError(f"unsupported URI {uri!r}: expected one of file://, s3://")
    return scheme


def join_uri(base: str, *parts: str) -> str:
    """Join path parts onto a URI with single slashes: ``join_uri("s3://b/a/", "x", "y.csv")``.

    A part with a ``..`` segment is refused: a key from a listing or a manifest must never reach
    outside the prefix it is joined to (for ``file://`` that would be anywhere on the disk).
    """
    out = base.rstrip("/")
    for part in parts:
        part = part.strip("/")
        if ".." in part.split("/"):
            raise ValueError(f"{part!r} has a '..' segment: joined to {base!r} it could escape that prefix")
        if part:
            out = f"{out}/{part}"
    return out


def as_prefix(uri: str) -> str:
    """The folder-like form of a URI, ending in one slash."""
    return uri.rstrip("/") + "/"


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> ``("bucket", "key")``."""
    parts = urlsplit(uri)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError(f"not an s3:// URI: {uri!r}")
    return parts.netloc, parts.path.lstrip("/")


def file_path(uri: str) -> str:
    """``file:///abs/path`` -> ``/abs/path``. Relative ``file://`` URIs are refused."""
    parts = urlsplit(uri)
    if parts.scheme != "file":
        raise ValueError(f"not a file:// URI: {uri!r}")
    if parts.netloc not in ("", "localhost"):
        raise ValueError(f"file:// URI must be absolute (file:///path), got {uri!r}")
    if ".." in parts.path.split("/"):
        raise ValueError(f"file:// URI must not contain '..' segments, got {uri!r}")
    return parts.path
