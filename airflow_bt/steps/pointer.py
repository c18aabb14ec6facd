"""Which complete attempt of a date is the latest, and moving ``_LATEST.json`` only forward.

"Latest" is the most recently *completed* attempt: the one whose ``_SUCCESS`` object was written
last, by the storage's own clock (S3 ``LastModified``, a file's mtime), ties broken by the
manifest's ``published_at`` and then the attempt prefix. :func:`completion_order` is that order, for
every pointer that names a latest attempt (``_LATEST.json`` here; a table snapshot or catalog
partition follows the same rule).

:func:`move_latest_forward` is a lock-free compare-and-swap loop: read the pointer and its version,
stop if it already names an attempt that completed later, else write conditionally on that
version (S3 ``If-Match`` / ``If-None-Match: *``; for files an flock'd compare and an atomic
replace) and start over when another writer won the race. So after any interleaving of publishers
the pointer names the attempt that completed last, and it never moves back.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from airflow_bt.steps.layout import SUCCESS_NAME
from airflow_bt.storage.base import ObjectNotFoundError, PreconditionFailedError, Storage
from airflow_bt.storage.uris import join_uri

log = logging.getLogger(__name__)

#: Compare-and-swap rounds before giving up (each lost round means another publisher moved the pointer).
MAX_ROUNDS = 20

CompletionOrder = tuple[float, str, str]


def completion_order(completed_at: float, published_at: str, attempt_prefix: str) -> CompletionOrder:
    """The sort key of a complete attempt: later completion sorts higher."""
    return (float(completed_at), str(published_at), str(attempt_prefix))


def completed_at(store: Storage, attempt_prefix: str) -> float:
    """When the attempt completed: its ``_SUCCESS`` object's timestamp (raises if it has none)."""
    return store.stat(join_uri(attempt_prefix, SUCCESS_NAME)).mtime


def attempt_order(store: Storage, attempt_prefix: str) -> CompletionOrder | None:
    """The completion order of a published attempt (its ``_SUCCESS`` time, its manifest's ``published_at``);
    None for a folder that is not a complete attempt."""
    from airflow_bt.steps.layout import MANIFEST_NAME

    try:
        when = completed_at(store, attempt_prefix)
    except ObjectNotFoundError:
        return None
    try:
        published = json.loads(store.read_bytes(join_uri(attempt_prefix, MANIFEST_NAME))).get("published_at") or ""
    except (ObjectNotFoundError, ValueError, AttributeError):
        published = ""
    return completion_order(when, published, attempt_prefix)


def _order_of_pointer(store: Storage, pointer: dict[str, Any]) -> CompletionOrder | None:
    attempt = pointer.get("attempt_prefix")
    if not attempt:
        return None
    when = pointer.get("completed_at")
    if when is None:  # a pointer written before completion times were recorded
        try:
            when = completed_at(store, attempt)
        except ObjectNotFoundError:
            return None
    return completion_order(when, pointer.get("published_at") or "", attempt)


def move_latest_forward(store: Storage, latest_uri: str, pointer: dict[str, Any]) -> bool:
    """Write ``pointer`` (it has ``attempt_prefix``, ``completed_at``, ``published_at``) to ``latest_uri``
    unless the pointer there names an attempt that completed later. True if it now names ours."""
    mine = completion_order(pointer["completed_at"], pointer["published_at"], pointer["attempt_prefix"])
    data = json.dumps(pointer, indent=1).encode()
    for _ in range(MAX_ROUNDS):
        current = store.read_versioned(latest_uri)
        if current is not None:
            if current.data == data:  # our own write, e.g. its response was lost and the PUT retried
                return True
            try:
                named = dict(json.loads(current.data))
            except ValueError:
                named = {}  # an unreadable pointer is replaced
            if named.get("attempt_prefix") == pointer["attempt_prefix"]:
                return True  # already ours
            theirs = _order_of_pointer(store, named)
            if theirs is not None and theirs > mine:
                log.info("%s already points at %s, which completed after %s: the pointer stays", latest_uri,
                         named["attempt_prefix"], pointer["attempt_prefix"])
                return False
        try:
            store.replace_if(latest_uri, data, current.version if current is not None else None)
            return True
        except PreconditionFailedError:
            log.info("%s changed while it was being moved: reading it again", latest_uri)
    raise RuntimeError(f"{latest_uri}: lost the compare-and-swap {MAX_ROUNDS} times in a row; "
                       "too many publishers of one date at once")
