"""The log lines of ``local-sagemaker``'s transform jobs: in memory, and in CloudWatch Logs when it is configured.

SageMaker writes a transform job's container output to the log group ``/aws/sagemaker/TransformJobs``, one
stream per instance named ``<job name>/<instance id>-<start time>``. The SageMaker Python SDK's
``Transformer.wait()`` and the console read them there: the SDK lists the streams under ``<job name>/``
until it has one per instance, reads each from its head, and once ``DescribeTransformJob`` shows a terminal
status it reads once more and stops. So the service sends every line of a job before the job turns
terminal (:meth:`JobLogs.finish` is called first).

:class:`JobLogs` keeps every job's lines in memory (the last :data:`MEMORY_LINES` per stream; the service
answers ``GET /logs/<job name>`` from them) and, given a CloudWatch Logs client, ships them with
``PutLogEvents`` from one background thread: batched (at most :data:`FLUSH_INTERVAL_S` late, up to
10,000 events or 1 MB a call), so writing a line costs the engine an append under a lock.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

LOG_GROUP = "/aws/sagemaker/TransformJobs"
FLUSH_INTERVAL_S = 0.5
MEMORY_LINES = 5000
MAX_BATCH_EVENTS = 10_000  # PutLogEvents' limits
MAX_BATCH_BYTES = 1_048_576
EVENT_OVERHEAD = 26
MAX_EVENT_BYTES = 256 * 1024 - EVENT_OVERHEAD
#: After a failed send, nothing is sent for this long (lines wait, in order, then go in one batch), so an
#: unreachable endpoint never holds up the jobs' statuses.
BACKOFF_S = 30.0

_log = logging.getLogger(__name__)

Event = tuple[int, str]  # (epoch milliseconds, message)


def instance_id(job_name: str, instance: int) -> str:
    """A stable EC2-style id for instance ``instance`` of the job (``i-`` and 17 hex digits)."""
    return "i-" + hashlib.sha256(f"{job_name}/{instance}".encode()).hexdigest()[:17]


def stream_name(job_name: str, instance: int, started: float) -> str:
    """The job's stream for ``instance``: ``<job name>/<instance id>-<start, epoch seconds>``, as SageMaker's."""
    return f"{job_name}/{instance_id(job_name, instance)}-{int(started)}"


def batches(events: list[Event]) -> list[list[Event]]:
    """``events`` (in order) cut into ``PutLogEvents`` calls: each within the count and size limits."""
    out: list[list[Event]] = []
    current: list[Event] = []
    size = 0
    for stamp, message in events:
        data = message.encode("utf-8", "replace")
        if len(data) > MAX_EVENT_BYTES:
            message = data[:MAX_EVENT_BYTES].decode("utf-8", "ignore")
            data = message.encode()
        cost = len(data) + EVENT_OVERHEAD
        if current and (len(current) >= MAX_BATCH_EVENTS or size + cost > MAX_BATCH_BYTES):
            out.append(current)
            current, size = [], 0
        current.append((stamp, message or " "))  # CloudWatch refuses empty messages
        size += cost
    if current:
        out.append(current)
    return out


@dataclass
class _Stream:
    name: str
    memory: deque[Event] = field(default_factory=lambda: deque(maxlen=MEMORY_LINES))
    pending: list[Event] = field(default_factory=list)
    created: bool = False


class JobLogs:
    """Every job's log lines, by stream; shipped to CloudWatch Logs when ``client`` is given.

    :param client: a boto3 ``logs`` client, or ``None`` to keep the lines in memory only.
    :param where: how the start-up line names the destination (e.g. the endpoint URL).
    :param clock: epoch seconds (tests pass a fake).
    """

    def __init__(self, client: Any = None, *, where: str = "", clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.where = where
        self.clock = clock
        self._streams: dict[str, dict[int, _Stream]] = {}
        self._started: dict[str, float] = {}
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()  # one sender at a time keeps each stream's events in order
        self._group_ready = False
        self._wake = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._failed_once = False
        self._failing_until = 0.0
        if client is not None:
            self._thread = threading.Thread(target=self._loop, name="job-logs", daemon=True)
            self._thread.start()

    def describe(self) -> str:
        if self.client is None:
            return ("job logs: kept in memory (no CloudWatch Logs endpoint configured: set "
                    "AWS_ENDPOINT_URL_CLOUDWATCH_LOGS or start with --job-logs cloudwatch to ship them); read one "
                    "job's with GET /logs/<job name>")
        return f"job logs: CloudWatch Logs {self.where} log group {LOG_GROUP}, stream <job name>/<instance id>-<start>"

    # -- writing -------------------------------------------------------------------------------------------

    def start_job(self, job_name: str) -> None:
        with self._lock:
            self._started.setdefault(job_name, self.clock())
            self._streams.setdefault(job_name, {})

    def write(self, job_name: str, message: str, instance: int = 0) -> None:
        """Add one line (the time is now) to the job's stream of ``instance``."""
        event = (int(self.clock() * 1000), message.rstrip("\n"))
        with self._lock:
            started = self._started.setdefault(job_name, self.clock())
            streams = self._streams.setdefault(job_name, {})
            stream = streams.get(instance)
            if stream is None:
                stream = streams[instance] = _Stream(stream_name(job_name, instance, started))
            stream.memory.append(event)
            if self.client is not None:
                stream.pending.append(event)

    def finish(self, job_name: str) -> None:
        """Send the job's pending lines now (before it shows a terminal status), unless sending failed lately."""
        if self.client is not None and time.monotonic() >= self._failing_until:
            self._flush(only=job_name)

    # -- reading -------------------------------------------------------------------------------------------

    def lines(self, job_name: str) -> dict[str, list[Event]] | None:
        """The job's lines in memory, by stream name; ``None`` for a job that has none."""
        with self._lock:
            streams = self._streams.get(job_name)
            if streams is None:
                return None
            return {s.name: list(s.memory) for _, s in sorted(streams.items())}

    # -- shipping ------------------------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._closed:
            self._wake.wait(FLUSH_INTERVAL_S)
            self._wake.clear()
            if time.monotonic() >= self._failing_until:  # a failing endpoint is tried again after BACKOFF_S
                self._flush()

    def _take(self, only: str | None) -> list[tuple[_Stream, list[Event]]]:
        with self._lock:
            taken = []
            for job, streams in self._streams.items():
                if only is not None and job != only:
                    continue
                for stream in streams.values():
                    if stream.pending:
                        taken.append((stream, stream.pending))
                        stream.pending = []
            return taken

    def _flush(self, only: str | None = None) -> None:
        with self._send_lock:
            for stream, events in self._take(only):
                if time.monotonic() < self._failing_until:  # it just failed: keep the rest for later, in order
                    with self._lock:
                        stream.pending[:0] = events
                    continue
                sent = [0]
                try:
                    self._send(stream, events, sent)
                except Exception as exc:  # the job goes on; the lines not sent wait for the next try
                    with self._lock:
                        stream.pending[:0] = events[sent[0]:]
                        del stream.pending[:-MEMORY_LINES]  # a long outage keeps the newest lines
                    self._failing_until = time.monotonic() + BACKOFF_S
                    if not self._failed_once:
                        _log.warning("could not write job logs to CloudWatch Logs (%s): %s: %s; trying again in "
                                     "%.0f s (meanwhile: GET /logs/<job name>)", self.where, type(exc).__name__, exc,
                                     BACKOFF_S)
                    self._failed_once = True

    def _send(self, stream: _Stream, events: list[Event], sent: list[int]) -> None:
        """PutLogEvents ``events`` (sorted: in time order); ``sent[0]`` counts those that went out."""
        if not self._group_ready:
            self._create("create_log_group", logGroupName=LOG_GROUP)
            self._group_ready = True
        if not stream.created:
            self._create("create_log_stream", logGroupName=LOG_GROUP, logStreamName=stream.name)
            stream.created = True
        events.sort(key=lambda e: e[0])
        for batch in batches(events):
            self.client.put_log_events(logGroupName=LOG_GROUP, logStreamName=stream.name,
                                       logEvents=[{"timestamp": t, "message": m} for t, m in batch])
            sent[0] += len(batch)

    def _create(self, method: str, **kwargs: str) -> None:
        try:
            getattr(self.client, method)(**kwargs)
        except Exception as exc:
            code = getattr(exc, "response", {}).get("Error", {}).get("Code")
            if code != "ResourceAlreadyExistsException":
                raise

    def close(self) -> None:
        """Send what is pending and stop the background thread."""
        self._closed = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self.client is not None and time.monotonic() >= self._failing_until:
            self._flush()


#: boto3's own variable for the service is ``AWS_ENDPOINT_URL_CLOUDWATCH_LOGS`` (from its service id,
#: "CloudWatch Logs"); the service also takes this shorter name, which users guess.
LOGS_ENDPOINT_ALIAS = "AWS_ENDPOINT_URL_LOGS"


def _quick_config() -> Any:
    """Short timeouts and one retry: a job's end waits for its last lines, never long for an endpoint."""
    from botocore.config import Config

    return Config(connect_timeout=2, read_timeout=10, retries={"max_attempts": 2})


def configured_logs_client(region: str) -> Any:
    """A CloudWatch Logs client when boto3's standard configuration names an endpoint for it
    (``AWS_ENDPOINT_URL_CLOUDWATCH_LOGS``, ``AWS_ENDPOINT_URL``, ``endpoint_url`` in the config file's
    profile or its ``services`` section) or :data:`LOGS_ENDPOINT_ALIAS` does, else ``None``."""
    import os

    import boto3
    from botocore.config import Config

    quick = _quick_config()
    alias = os.environ.get(LOGS_ENDPOINT_ALIAS)
    if alias:
        return boto3.client("logs", region_name=region, endpoint_url=alias, config=quick)
    client = boto3.client("logs", region_name=region, config=quick)
    default = boto3.client("logs", region_name=region, config=Config(ignore_configured_endpoint_urls=True))
    return client if client.meta.endpoint_url != default.meta.endpoint_url else None


def open_job_logs(region: str, mode: str = "auto") -> JobLogs:
    """:class:`JobLogs` for the service: ``auto`` ships to CloudWatch Logs where an endpoint is configured;
    ``cloudwatch`` always (AWS's own endpoint if none is configured); ``memory`` never."""
    if mode not in ("auto", "cloudwatch", "memory"):
        raise ValueError(f"job logs must be auto, cloudwatch or memory, got {mode!r}")
    if mode == "memory":
        return JobLogs()
    client = configured_logs_client(region)
    if client is None and mode == "cloudwatch":
        import boto3

        client = boto3.client("logs", region_name=region, config=_quick_config())
    return JobLogs(client, where=client.meta.endpoint_url) if client is not None else JobLogs()
