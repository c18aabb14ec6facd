"""``s3://`` storage through the amazon provider's S3Hook, with conditional (create-only) puts."""

from __future__ import annotations

import contextlib
import io
import tempfile
from collections.abc import Iterator
from functools import cached_property
from typing import TYPE_CHECKING, Any, BinaryIO

from airflow_bt.storage.base import ObjectExistsError, ObjectInfo, ObjectNotFoundError, Storage
from airflow_bt.storage.uris import as_prefix, split_s3

if TYPE_CHECKING:
    from botocore.client import BaseClient

# Parts are spooled in memory up to this size, then on local disk, before the create-only PUT.
_SPOOL_BYTES = 16 * 1024 * 1024
_MAX_SINGLE_PUT = 5 * 1024**3
_EXISTS_CODES = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}
_MISSING_CODES = {"NoSuchKey", "404", "NotFound"}


_READ_BUFFER = 1024 * 1024


class _BodyReader(io.RawIOBase):
    """A raw, readable stream over botocore's ``StreamingBody``."""

    def __init__(self, body: Any) -> None:
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._body.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _error_code(exc: Exception) -> str:
    response: dict[str, Any] = getattr(exc, "response", {}) or {}
    return str(response.get("Error", {}).get("Code", ""))


class S3Storage(Storage):
    """Objects in S3 (or MinIO, or moto) reached through ``S3Hook(aws_conn_id)``.

    With ``aws_conn_id=None`` boto3's standard configuration is used (environment,
    ``AWS_ENDPOINT_URL_S3``, profiles), which is what processes outside Airflow want.
    """

    scheme = "s3"

    def __init__(self, aws_conn_id: str | None = "aws_default", client_kwargs: dict[str, Any] | None = None) -> None:
        self.aws_conn_id = aws_conn_id
        self.client_kwargs = client_kwargs

    @cached_property
    def client(self) -> BaseClient:
        if self.aws_conn_id is None or self.client_kwargs is not None:
            import boto3

            return boto3.client("s3", **(self.client_kwargs or {}))
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        return S3Hook(aws_conn_id=self.aws_conn_id).get_conn()

    def portable(self) -> S3Storage:
        """Resolve the connection now into plain boto3 arguments a spawned process can use."""
        if self.aws_conn_id is None or self.client_kwargs is not None:
            return S3Storage(aws_conn_id=None, client_kwargs=self.client_kwargs)
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        hook = S3Hook(aws_conn_id=self.aws_conn_id)
        session = hook.get_session()
        creds = session.get_credentials()
        kwargs: dict[str, Any] = {"region_name": hook.conn_region_name or session.region_name}
        if creds is not None:
            frozen = creds.get_frozen_credentials()
            kwargs.update(aws_access_key_id=frozen.access_key, aws_secret_access_key=frozen.secret_key,
                          aws_session_token=frozen.token)
        endpoint = hook.conn_config.get_service_endpoint_url("s3") if hasattr(
            hook.conn_config, "get_service_endpoint_url") else hook.conn_config.endpoint_url
        if endpoint:
            kwargs["endpoint_url"] = endpoint
        return S3Storage(aws_conn_id=None, client_kwargs=kwargs)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("client", None)  # clients do not pickle; a worker builds its own
        return state

    def list(self, prefix_uri: str) -> Iterator[ObjectInfo]:
        bucket, key_prefix = split_s3(as_prefix(prefix_uri))
        key_prefix = "" if key_prefix == "/" else key_prefix
        paginator = self.client.get_paginator("list_objects_v2")
        base = as_prefix(prefix_uri)
        for page in paginator.paginate(Bucket=bucket, Prefix=key_prefix):
            for obj in page.get("Contents", []):
                key = obj["Key"]
                if key.endswith("/"):
                    continue  # a console-made "folder" marker, not data
                rel = key[len(key_prefix):]
                yield ObjectInfo(
                    uri=base + rel, key=rel, size=int(obj["Size"]), etag=str(obj["ETag"]).strip('"'),
                    mtime=obj["LastModified"].timestamp(),
                )

    def stat(self, uri: str) -> ObjectInfo:
        bucket, key = split_s3(uri)
        try:
            head = self.client.head_object(Bucket=bucket, Key=key)
        except Exception as exc:
            if _error_code(exc) in _MISSING_CODES:
                raise ObjectNotFoundError(uri) from None
            raise
        return ObjectInfo(uri=uri, key=key.rsplit("/", 1)[-1], size=int(head["ContentLength"]),
                          etag=str(head["ETag"]).strip('"'), mtime=head["LastModified"].timestamp())

    @contextlib.contextmanager
    def open_read(self, uri: str) -> Iterator[BinaryIO]:
        bucket, key = split_s3(uri)
        try:
            body = self.client.get_object(Bucket=bucket, Key=key)["Body"]
        except Exception as exc:
            if _error_code(exc) in _MISSING_CODES:
                raise ObjectNotFoundError(uri) from None
            raise
        try:
            # A buffered reader gives the BinaryIO contract: iterating yields lines (botocore's
            # StreamingBody yields 1 KiB chunks), and read(n) may be served from the buffer.
            yield io.BufferedReader(_BodyReader(body), buffer_size=_READ_BUFFER)
        finally:
            body.close()

    @contextlib.contextmanager
    def open_write(self, uri: str, *, durable: bool = True) -> Iterator[BinaryIO]:
        bucket, key = split_s3(uri)
        with tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES) as spool:
            yield spool  # type: ignore[misc]
            size = spool.tell()
            if size > _MAX_SINGLE_PUT:
                raise ValueError(f"{uri}: {size} bytes is over the 5 GiB single-PUT limit; use smaller shards")
            spool.seek(0)
            try:
                self.client.put_object(Bucket=bucket, Key=key, Body=spool, ContentLength=size, IfNoneMatch="*")
            except Exception as exc:
                if _error_code(exc) in _EXISTS_CODES:
                    raise ObjectExistsError(uri) from None
                raise

    def replace_bytes(self, uri: str, data: bytes) -> None:
        bucket, key = split_s3(uri)
        self.client.put_object(Bucket=bucket, Key=key, Body=data)

    def exists(self, uri: str) -> bool:
        try:
            self.stat(uri)
        except ObjectNotFoundError:
            return False
        return True
