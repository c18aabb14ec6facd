"""``s3://`` storage through the amazon provider's S3Hook, with conditional (create-only) puts."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tempfile
from collections.abc import Iterator, Sequence
from functools import cached_property
from typing import IO, TYPE_CHECKING, Any, BinaryIO

from airflow_bt.storage.base import (
    ObjectExistsError,
    ObjectInfo,
    ObjectNotFoundError,
    PreconditionFailedError,
    Storage,
    StorageError,
    Versioned,
)
from airflow_bt.storage.uris import as_prefix, split_s3

if TYPE_CHECKING:
    from botocore.client import BaseClient
    from botocore.config import Config

# Parts are spooled in memory up to this size, then on local disk, before the create-only PUT.
_SPOOL_BYTES = 16 * 1024 * 1024
_MAX_SINGLE_PUT = 5 * 1024**3
_EXISTS_CODES = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}
_MISSING_CODES = {"NoSuchKey", "404", "NotFound"}


_READ_BUFFER = 1024 * 1024
#: Retries when the caller configured none (no ``retries`` in the client's Config, no
#: ``AWS_RETRY_MODE``/``AWS_MAX_ATTEMPTS``, no ``retry_mode``/``max_attempts`` in the profile).
#: botocore's own default is 3 attempts in standard mode (current botocore; older ones default to
#: legacy mode, 5 attempts, uncapped backoff), so a request that meets a few 500s or SlowDowns in a
#: row fails the whole step, whose Airflow retry then redoes every object. Standard mode caps the
#: backoff at 20 s and stops retrying once its retry quota is spent, so an outage still fails.
_DEFAULT_RETRIES: dict[str, Any] = {"mode": "standard", "total_max_attempts": 10}


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


class _RangedReader(io.RawIOBase):
    """A raw, seekable stream over one S3 object version: every read is a ranged GET (``If-Match`` its ETag)."""

    def __init__(self, client: Any, bucket: str, key: str, size: int, etag: str, uri: str) -> None:
        self._client, self._bucket, self._key, self._uri = client, bucket, key, uri
        self._size, self._etag = size, etag
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        want = min(len(buffer), self._size - self._pos)
        if want <= 0:
            return 0
        try:
            body = self._client.get_object(Bucket=self._bucket, Key=self._key, IfMatch=f'"{self._etag}"',
                                           Range=f"bytes={self._pos}-{self._pos + want - 1}")["Body"]
        except Exception as exc:
            if _error_code(exc) in _EXISTS_CODES | _MISSING_CODES:
                raise StorageError(f"{self._uri} changed or vanished while it was read (listed with ETag "
                                   f"{self._etag}); run the step again to read the new version") from None
            raise
        with contextlib.closing(body):
            data = body.read()
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)


def _error_code(exc: Exception) -> str:
    response: dict[str, Any] = getattr(exc, "response", {}) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _retry_attempts(exc: Exception) -> int:
    """How many times botocore retried the call that raised ``exc`` (0: the first answer was final)."""
    response: dict[str, Any] = getattr(exc, "response", {}) or {}
    return int(response.get("ResponseMetadata", {}).get("RetryAttempts") or 0)


def _with_default_retries(config: Config | None, profile: str | None = None) -> Config | None:
    """``config`` plus ``_DEFAULT_RETRIES``, unless the caller configured retries anywhere.

    Anywhere means the Config's ``retries``, the environment (``AWS_RETRY_MODE``,
    ``AWS_MAX_ATTEMPTS``) or the shared config file's profile (``retry_mode``,
    ``max_attempts``): a caller's choice always wins, in full.
    """
    from botocore.config import Config
    from botocore.exceptions import ProfileNotFound
    from botocore.session import Session

    if getattr(config, "retries", None):
        return config
    if os.environ.get("AWS_RETRY_MODE") or os.environ.get("AWS_MAX_ATTEMPTS"):
        return config
    try:
        scoped = Session(profile=profile).get_scoped_config()
    except ProfileNotFound:
        return config  # creating the client reports it
    if "retry_mode" in scoped or "max_attempts" in scoped:
        return config
    defaults = Config(retries=dict(_DEFAULT_RETRIES))
    return config.merge(defaults) if config is not None else defaults


class S3Storage(Storage):
    """Objects in S3 (or MinIO, or moto) reached through ``S3Hook(aws_conn_id)``.

    With ``aws_conn_id=None`` boto3's standard configuration is used (environment,
    ``AWS_ENDPOINT_URL_S3``, profiles), which is what processes outside Airflow want.

    Faults: requests are retried by botocore (``_DEFAULT_RETRIES`` unless the caller set
    retries). A create-only PUT whose first attempt succeeded but whose answer was lost is
    retried and meets its own object (412); :meth:`open_write` accepts that when the object
    holds exactly the bytes it sent, and still raises :class:`ObjectExistsError` otherwise.
    """

    scheme = "s3"

    def __init__(self, aws_conn_id: str | None = "aws_default", client_kwargs: dict[str, Any] | None = None) -> None:
        self.aws_conn_id = aws_conn_id
        self.client_kwargs = client_kwargs

    @cached_property
    def client(self) -> BaseClient:
        if self.aws_conn_id is None or self.client_kwargs is not None:
            import boto3

            kwargs = dict(self.client_kwargs or {})
            kwargs["config"] = _with_default_retries(kwargs.get("config"))
            return boto3.client("s3", **kwargs)
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        hook = S3Hook(aws_conn_id=self.aws_conn_id)
        config = _with_default_retries(hook.conn_config.botocore_config, hook.conn_config.profile_name)
        # get_conn() with the connection's own Config, or the same client with retries added
        return hook.get_client_type(region_name=hook.region_name, config=config)

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
    def open_ranged(self, obj: ObjectInfo) -> Iterator[BinaryIO]:
        bucket, key = split_s3(obj.uri)
        # A small buffer: Parquet readers ask for the footer and whole column chunks, which pass through.
        with io.BufferedReader(_RangedReader(self.client, bucket, key, obj.size, obj.etag, obj.uri),
                               buffer_size=64 * 1024) as stream:
            yield stream

    def delete_objects(self, uris: Sequence[str]) -> None:
        by_bucket: dict[str, list[str]] = {}
        for uri in uris:
            bucket, key = split_s3(uri)
            by_bucket.setdefault(bucket, []).append(key)
        for bucket, keys in by_bucket.items():
            for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1,000 keys
                answer = self.client.delete_objects(Bucket=bucket, Delete={
                    "Objects": [{"Key": key} for key in keys[start:start + 1000]], "Quiet": True})
                if answer.get("Errors"):
                    first = answer["Errors"][0]
                    raise StorageError(f"deleting s3://{bucket}/{first.get('Key')} failed: {first.get('Code')} "
                                       f"{first.get('Message')} ({len(answer['Errors'])} object(s) not deleted)")

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
                if _error_code(exc) not in _EXISTS_CODES:
                    raise
                # After a retry the object we collided with may be our own first attempt, whose
                # success response was lost (a 5xx from a proxy, a dropped connection).
                if _retry_attempts(exc) and self._holds(bucket, key, spool, size):
                    return
                raise ObjectExistsError(uri) from None

    def _holds(self, bucket: str, key: str, spool: IO[bytes], size: int) -> bool:
        """Whether the object at ``bucket/key`` is exactly the ``size`` bytes in ``spool``.

        The ETag of a single-part PUT without SSE-KMS/SSE-C is the MD5 of the bytes: equal
        ETags settle it without a download. Otherwise (another ETag kind, or other bytes) the
        object is read back and compared, so an encrypted twin is not mistaken for a collision.
        """
        try:
            head = self.client.head_object(Bucket=bucket, Key=key)
        except Exception as exc:
            if _error_code(exc) in _MISSING_CODES:
                return False
            raise
        if int(head["ContentLength"]) != size:
            return False
        spool.seek(0)
        md5 = hashlib.md5(usedforsecurity=False)
        for chunk in iter(lambda: spool.read(_READ_BUFFER), b""):
            md5.update(chunk)
        if str(head["ETag"]).strip('"') == md5.hexdigest():
            return True
        spool.seek(0)
        body = self.client.get_object(Bucket=bucket, Key=key, IfMatch=head["ETag"])["Body"]
        try:
            stored = io.BufferedReader(_BodyReader(body), buffer_size=_READ_BUFFER)
            while chunk := spool.read(_READ_BUFFER):
                if stored.read(len(chunk)) != chunk:  # a buffered read returns short only at the end
                    return False
            return stored.read(1) == b""
        finally:
            body.close()

    def read_versioned(self, uri: str) -> Versioned | None:
        bucket, key = split_s3(uri)
        try:
            response = self.client.get_object(Bucket=bucket, Key=key)
        except Exception as exc:
            if _error_code(exc) in _MISSING_CODES:
                return None
            raise
        with contextlib.closing(response["Body"]) as body:
            return Versioned(body.read(), str(response["ETag"]))

    def replace_if(self, uri: str, data: bytes, expected_version: str | None) -> None:
        """A conditional PUT: ``If-Match`` the ETag read, or ``If-None-Match: *`` for a first write.

        A 412 (or 409, a concurrent conditional write) is :class:`PreconditionFailedError`, and so is
        a 404 to ``If-Match`` (the object was deleted since it was read). After a lost response
        botocore's retry can meet our own write as a 412; the caller reads again and finds its own
        bytes there.
        """
        bucket, key = split_s3(uri)
        condition = {"IfNoneMatch": "*"} if expected_version is None else {"IfMatch": expected_version}
        try:
            self.client.put_object(Bucket=bucket, Key=key, Body=data, **condition)
        except Exception as exc:
            code = _error_code(exc)
            if code in _EXISTS_CODES or (expected_version is not None and code in _MISSING_CODES):
                raise PreconditionFailedError(uri) from None
            raise

    def exists(self, uri: str) -> bool:
        try:
            self.stat(uri)
        except ObjectNotFoundError:
            return False
        return True
