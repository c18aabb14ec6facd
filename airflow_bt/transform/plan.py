"""Planning a local transform job: which objects, where their output goes, which instance runs each,
and the batching knobs once the container's execution parameters are known."""

from __future__ import annotations

import heapq
import json
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from airflow_bt.storage import as_prefix, join_uri
from airflow_bt.transform.runtime.base import StorageResolver

DEFAULT_MAX_CONCURRENT_TRANSFORMS = 1
DEFAULT_MAX_PAYLOAD_IN_MB = 6
DEFAULT_BATCH_STRATEGY = "MultiRecord"


class InputError(ValueError):
    """The job's input cannot be listed: no objects, or a malformed manifest."""


@dataclass(frozen=True)
class InputObject:
    """One input object of a job. ``index`` is its 0-based place in the job's sorted list."""

    index: int
    uri: str
    key: str
    out_uri: str
    size: int = -1


@dataclass(frozen=True)
class Knobs:
    """The batching settings an instance runs with."""

    max_concurrent_transforms: int
    max_payload_in_mb: int
    batch_strategy: str

    def as_request_fields(self) -> dict[str, Any]:
        return {"MaxConcurrentTransforms": self.max_concurrent_transforms,
                "MaxPayloadInMB": self.max_payload_in_mb, "BatchStrategy": self.batch_strategy}


def _check_key(key: str, where: str) -> str:
    if not isinstance(key, str) or not key.strip("/"):
        raise InputError(f"{where}: entries must be non-empty relative keys, got {key!r}")
    if ".." in key.split("/") or key.startswith("/"):
        raise InputError(f"{where}: entry {key!r} must be relative and must not contain '..'")
    return key


def parse_manifest(data: bytes, manifest_uri: str) -> tuple[str, list[str]]:
    """``[{"prefix": "s3://b/p/"}, "rel/a.csv", ...]`` -> ``("s3://b/p/", ["rel/a.csv", ...])``."""
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise InputError(f"manifest {manifest_uri} is not JSON: {exc}") from None
    if not isinstance(doc, list) or not doc or not isinstance(doc[0], dict) or "prefix" not in doc[0]:
        raise InputError(f'manifest {manifest_uri} must be a JSON list starting with {{"prefix": "<uri>"}}')
    prefix = doc[0]["prefix"]
    if not isinstance(prefix, str) or not prefix.startswith(("s3://", "file:///")):
        raise InputError(f"manifest {manifest_uri}: prefix must be an s3:// or file:/// URI, got {prefix!r}")
    keys = [_check_key(k, f"manifest {manifest_uri}") for k in doc[1:]]
    seen: set[str] = set()
    for key in keys:
        if key in seen:
            raise InputError(f"manifest {manifest_uri}: entry {key!r} appears twice; "
                             "it would have two outputs")
        seen.add(key)
    return prefix, keys


def list_inputs(
    request: Mapping[str, Any], storage_for: StorageResolver, *, need_sizes: bool,
) -> list[InputObject]:
    """The job's input objects in order, each with its ``<S3OutputPath>/<key>.out`` URI.

    ``S3Prefix``: every object below the prefix (or the one object the URI names);
    ``ManifestFile``: the manifest's entries, each checked to exist (one listing of the
    manifest's prefix) so a missing object fails the job before anything runs. ``need_sizes``:
    look up sizes (to balance instances) for an ``S3Prefix`` naming one object.
    """
    source = request["TransformInput"]["DataSource"]["S3DataSource"]
    uri, data_type = source["S3Uri"], source["S3DataType"]
    out_path = request["TransformOutput"]["S3OutputPath"]
    found: list[tuple[str, str, int]] = []  # (uri, key, size)
    if data_type == "ManifestFile":
        prefix, keys = parse_manifest(storage_for(uri).read_bytes(uri), uri)
        store = storage_for(prefix)
        listed = {obj.key: obj.size for obj in store.list(as_prefix(prefix))}  # one listing, not a stat per key
        for key in keys:
            obj_uri = as_prefix(prefix) + key.lstrip("/")
            size = listed.get(key.lstrip("/"))
            if size is None:
                raise InputError(f"manifest {uri} names {key!r}, but {obj_uri} does not exist; nothing was "
                                 "processed (was the object deleted or moved after the manifest was written?)")
            found.append((obj_uri, key, size))
    else:
        store = storage_for(uri)
        found = [(o.uri, o.key, o.size) for o in store.list(as_prefix(uri))]
        if not found and not uri.endswith("/") and store.exists(uri):
            found = [(uri, posixpath.basename(uri), store.stat(uri).size)]
    if not found:
        raise InputError(f"no input objects found at {uri} ({data_type})")
    return [InputObject(index=i, uri=u, key=k, out_uri=join_uri(out_path, k + ".out"), size=s)
            for i, (u, k, s) in enumerate(found)]


def assign_instances(objects: list[InputObject], instance_count: int) -> list[list[InputObject]]:
    """Distribute whole objects over instances, balancing total bytes (largest first, onto the
    least-loaded instance; ties go to the lower instance). Each instance keeps input order.
    Without sizes, objects go round-robin in key order. Empty instances are dropped."""
    n = max(1, min(instance_count, len(objects)))
    buckets: list[list[InputObject]] = [[] for _ in range(n)]
    if n == 1:
        return [list(objects)]
    if any(o.size < 0 for o in objects):
        for i, obj in enumerate(objects):
            buckets[i % n].append(obj)
    else:
        heap = [(0, i) for i in range(n)]
        for obj in sorted(objects, key=lambda o: (-o.size, o.index)):
            load, i = heapq.heappop(heap)
            buckets[i].append(obj)
            heapq.heappush(heap, (load + obj.size, i))
    return [sorted(b, key=lambda o: o.index) for b in buckets if b]


def _exec_int(params: Mapping[str, Any], key: str, lo: int, hi: int | None) -> int | None:
    value = params.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < lo or (hi is not None and value > hi):
        limits = f">= {lo}" if hi is None else f"from {lo} to {hi}"
        raise ValueError(f"execution parameters: {key} must be an integer {limits}, got {value!r}")
    return value


def initial_knobs(request: Mapping[str, Any]) -> Knobs:
    """The request's knobs with defaults for the unset ones (``MaxConcurrentTransforms=0`` means unset)."""
    return resolve_knobs(request, None)


def resolve_knobs(request: Mapping[str, Any], exec_params: Mapping[str, Any] | None) -> Knobs:
    """Each knob from the request, else the container's execution parameters, else the default."""
    params = exec_params or {}
    mct = request.get("MaxConcurrentTransforms") or _exec_int(params, "MaxConcurrentTransforms", 1, None)
    mb = request.get("MaxPayloadInMB")
    if mb is None:
        mb = _exec_int(params, "MaxPayloadInMB", 0, 100)
    strategy = request.get("BatchStrategy") or params.get("BatchStrategy")
    if strategy is not None and strategy not in ("SingleRecord", "MultiRecord"):
        raise ValueError("execution parameters: BatchStrategy must be SingleRecord or MultiRecord, "
                         f"got {strategy!r}")
    knobs = Knobs(
        max_concurrent_transforms=int(mct or DEFAULT_MAX_CONCURRENT_TRANSFORMS),
        max_payload_in_mb=int(DEFAULT_MAX_PAYLOAD_IN_MB if mb is None else mb),
        batch_strategy=str(strategy or DEFAULT_BATCH_STRATEGY),
    )
    if knobs.max_concurrent_transforms * knobs.max_payload_in_mb > 100:
        raise ValueError(f"MaxConcurrentTransforms * MaxPayloadInMB must be <= 100, got "
                         f"{knobs.max_concurrent_transforms} * {knobs.max_payload_in_mb}")
    return knobs
