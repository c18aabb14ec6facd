"""What a transform instance reports: :class:`ObjectResult` and the engine events (:data:`Event`).

An instance (:mod:`airflow_bt.transform.instance`) reports through ``sink(event)`` (:data:`Sink`) with
small frozen, picklable dataclasses, so a worker process can send them over a queue; each carries
``instance``, its number:

- :class:`InstanceStarted` (``knobs``): the model is up and answered ``/ping``
- :class:`ObjectProgress` (``index``, ``key``, ``records``, ``seconds`` so far): at most once a second
- :class:`ObjectFinished` (``result``: :class:`ObjectResult`)
- :class:`InstanceFailed` (``message``): the model could not start (none of its objects ran), or a bug
- :class:`InstanceDone`: always last

The engine's ``_Monitor`` (:mod:`airflow_bt.transform.monitor`) turns them into stats, log lines
and ``progress`` calls.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeAlias

from airflow_bt.transform.plan import Knobs


@dataclass(frozen=True)
class ObjectResult:
    """How one input object went. ``error`` is ``None`` when its ``.out`` object was written.

    ``records`` counts the records scored; ``rejected`` those the model rejected (dead-letter),
    written to ``errors_uri`` (``first_rejected``: ``record <n>: <message>`` of the first one).
    """

    index: int
    key: str
    uri: str
    out_uri: str
    records: int
    requests: int
    bytes_in: int
    payload_bytes: int
    seconds: float
    error: str | None = None
    rejected: int = 0
    errors_uri: str | None = None
    first_rejected: str | None = None


@dataclass(frozen=True)
class InstanceEvent:
    """What every event says: which instance sent it."""

    instance: int


@dataclass(frozen=True)
class InstanceStarted(InstanceEvent):
    """The model is up; the instance runs its objects with ``knobs``."""

    knobs: Knobs


@dataclass(frozen=True)
class ObjectProgress(InstanceEvent):
    """Object ``index`` (``key``) is under way: ``records`` scored in ``seconds`` so far."""

    index: int
    key: str
    records: int
    seconds: float


@dataclass(frozen=True)
class ObjectFinished(InstanceEvent):
    """An object is done, written or failed (``result.error``)."""

    result: ObjectResult


@dataclass(frozen=True)
class InstanceFailed(InstanceEvent):
    """The instance could not run its objects: its model did not start, or it crashed."""

    message: str


@dataclass(frozen=True)
class InstanceDone(InstanceEvent):
    """The instance's last event."""


Event: TypeAlias = InstanceStarted | ObjectProgress | ObjectFinished | InstanceFailed | InstanceDone
Sink = Callable[[Event], None]
