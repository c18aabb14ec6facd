"""The engine's view of a running job: :class:`_Monitor` and what its events add up to.

:class:`_Monitor` collects the instances' events (:mod:`airflow_bt.transform.events`) into results,
log lines and ``progress`` calls while the job runs; :func:`_failure_reason`, :func:`_stop_reason`
and :func:`_stats` turn what it collected into the ``FailureReason`` and ``LocalEngineStats`` of
the ``DescribeTransformJob``-shaped result (:mod:`airflow_bt.transform.local_engine`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from airflow_bt.logs import LogLike
from airflow_bt.transform.events import (
    Event,
    InstanceDone,
    InstanceFailed,
    InstanceStarted,
    ObjectFinished,
    ObjectProgress,
    ObjectResult,
)
from airflow_bt.transform.plan import InputObject, Knobs

Progress = Callable[[int, int, int], None]
LOG_EVERY_S = 5.0
MAX_FAILURE_REASON = 1024
STOP_REASON = "stopped by request (StopTransformJob, a timeout or a kill)"


class _Monitor:
    """Collects instance events into stats, log lines and ``progress`` calls."""

    def __init__(self, objects_total: int, log: LogLike, progress: Progress | None) -> None:
        self.total = objects_total
        self.log = log
        self.progress = progress
        self.start = time.monotonic()
        self.last_log = self.start
        self.results: list[ObjectResult] = []
        self.instance_errors: list[str] = []
        self.knobs: Knobs | None = None
        self.done_instances: set[int] = set()
        self.records_done = 0
        self.in_progress: dict[int, int] = {}

    def _rate(self, records: int, seconds: float) -> float:
        return records / seconds if seconds > 0 else 0.0

    def handle(self, event: Event) -> None:
        match event:
            case InstanceStarted(instance=instance, knobs=knobs):
                if self.knobs is None:
                    self.knobs = knobs
                self.log.info("instance %d started: %s", instance, knobs.as_request_fields())
            case ObjectProgress():
                self._progress(event)
            case ObjectFinished(instance=instance, result=result):
                self._finished(instance, result)
            case InstanceFailed(instance=instance, message=message):
                self.instance_errors.append(message)
                self.log.error("instance %d failed: %s", instance, message)
            case InstanceDone(instance=instance):
                self.done_instances.add(instance)

    def _progress(self, event: ObjectProgress) -> None:
        self.in_progress[event.instance] = event.records
        now = time.monotonic()
        if now - self.last_log >= LOG_EVERY_S:
            self.last_log = now
            self.log.info("object %d of %d %s: %d records so far, %.0f records/s", event.index + 1, self.total,
                          event.key, event.records, self._rate(event.records, event.seconds))
        self._report()

    def _finished(self, instance: int, result: ObjectResult) -> None:
        self.results.append(result)
        self.in_progress.pop(instance, None)
        self.records_done += result.records
        if result.error:
            self.log.error("object %d of %d %s failed: %s", len(self.results), self.total, result.key, result.error)
        else:
            self.log.info("object %d of %d %s: %d records, %.0f records/s", len(self.results), self.total,
                          result.key, result.records, self._rate(result.records, result.seconds))
        if result.rejected:
            self.log.warning("dead-letter: %d record(s) of %s rejected by the model (first: %s); written to %s",
                             result.rejected, result.uri, result.first_rejected, result.errors_uri)
        self._report()

    def _report(self) -> None:
        if self.progress is None:
            return
        try:
            self.progress(len(self.results), self.total, self.records_done + sum(self.in_progress.values()))
        except Exception:  # progress is advisory: a broken callback must not fail the job
            self.log.exception("the progress callback failed; the job goes on")


def _truncated(reason: str) -> str:
    return reason if len(reason) <= MAX_FAILURE_REASON else reason[: MAX_FAILURE_REASON - 3] + "..."


def _failure_reason(objects: list[InputObject], monitor: _Monitor) -> str | None:
    failed = [r for r in sorted(monitor.results, key=lambda r: r.index) if r.error]
    finished = {r.index for r in monitor.results}
    missing = [o for o in objects if o.index not in finished]
    reasons = [r.error or "" for r in failed]
    if missing:
        cause = monitor.instance_errors[0] if monitor.instance_errors else "its instance stopped"
        reasons.append(f"{missing[0].uri} was not transformed: {cause}")
    if not reasons:
        return None
    more = len(failed) + len(missing) - 1
    return _truncated(reasons[0] + (f" (and {more} more object{'s' if more > 1 else ''} failed)" if more else ""))


def _stop_reason(objects: list[InputObject], monitor: _Monitor) -> str:
    failed = [r for r in sorted(monitor.results, key=lambda r: r.index) if r.error]
    reason = f"{STOP_REASON} after {len(monitor.results)} of {len(objects)} objects"
    if failed:
        reason += f"; {len(failed)} of them failed, the first: {failed[0].error}"
    return _truncated(reason)


def _stats(objects: list[InputObject], monitor: _Monitor) -> dict[str, Any]:
    """``LocalEngineStats``."""
    results = monitor.results
    seconds = time.monotonic() - monitor.start
    records = sum(r.records for r in results)
    return {
        "objects": len(objects),
        "objects_failed": len(objects) - sum(1 for r in results if not r.error),
        "records": records,
        "requests": sum(r.requests for r in results),
        "bytes_in": sum(r.bytes_in for r in results),
        "payload_bytes": sum(r.payload_bytes for r in results),
        "seconds": seconds,
        "records_per_second": records / seconds if seconds > 0 else 0.0,
        "rejected": sum(r.rejected for r in results),
        "rejected_objects": sum(1 for r in results if r.rejected),
    }
