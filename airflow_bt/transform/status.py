"""The states of a transform job, as ``DescribeTransformJob`` reports them, and what each means for us.

One enum for the hook, the backends, the trigger, the sensor and ``airflow-bt local-sagemaker``:
``InProgress`` and ``Stopping`` are still running; ``Completed`` is the only success; ``Failed`` and
``Stopped`` are failures (a stopped job's output is incomplete). Pure Python: the service imports it
without Airflow.
"""

from __future__ import annotations

import time
from enum import Enum


class TransformJobStatus(str, Enum):
    """``TransformJobStatus`` of ``DescribeTransformJob``."""

    IN_PROGRESS = "InProgress"
    STOPPING = "Stopping"
    COMPLETED = "Completed"
    FAILED = "Failed"
    STOPPED = "Stopped"

    @property
    def terminal(self) -> bool:
        """The job has ended: nothing will change any more."""
        return self not in (TransformJobStatus.IN_PROGRESS, TransformJobStatus.STOPPING)

    @property
    def failure(self) -> bool:
        """The job ended without a complete output (``Stopped`` is a failure, like ``Failed``)."""
        return self in (TransformJobStatus.FAILED, TransformJobStatus.STOPPED)

    @classmethod
    def of(cls, description: dict[str, object]) -> TransformJobStatus:
        """The status of a ``DescribeTransformJob`` response (a status this code does not know is an error)."""
        return cls(str(description["TransformJobStatus"]))


class JobWaitTimeout(Exception):
    """The job was still running when the wait's deadline passed."""


def next_poll_delay(check_interval: float, deadline: float | None, now: float | None = None) -> float:
    """Seconds until the next status check: ``check_interval``, cut short so the deadline is not overslept.

    ``deadline`` is a ``time.time()`` value (``None``: no limit). The sync wait of the hook and the
    trigger's async loop share this rule.
    """
    if deadline is None:
        return check_interval
    now = time.time() if now is None else now
    return max(0.0, min(check_interval, deadline - now))


def past_deadline(deadline: float | None, now: float | None = None) -> bool:
    return deadline is not None and (time.time() if now is None else now) >= deadline
