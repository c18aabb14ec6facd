"""The tail of a transform job's logs, for the task log of a job that failed.

- :class:`LogTail`: the last lines, where they came from, or why there are none;
- :func:`cloudwatch_tail`: SageMaker's (and ``airflow-bt local-sagemaker``'s) CloudWatch Logs streams
  ``/aws/sagemaker/TransformJobs`` ``<job name>/...``, read through a ``logs`` client of the task's AWS
  connection; no streams or no permission is a one-line note, never an error;
- :class:`LocalJobLog`: the local engine's job log in the task process: the lines the engine logs and the
  output of the model processes it starts, passed on to the task's log, the last :data:`KEEP_LINES` kept.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from airflow_bt.logs import LogLike

LOG_GROUP = "/aws/sagemaker/TransformJobs"
TAIL_LINES = 50
KEEP_LINES = 1000
_MAX_STREAMS = 50


@dataclass(frozen=True)
class LogTail:
    """A job's last log lines (oldest first) and ``source``, where they were read; ``note`` when there are none."""

    lines: list[str] = field(default_factory=list)
    source: str = ""
    note: str = ""


def cloudwatch_tail(client: Any, job_name: str, limit: int = TAIL_LINES) -> LogTail:
    """The last ``limit`` events of the job's streams, merged by time; each line names its stream when there
    are several (one per instance)."""
    source = f"CloudWatch Logs {LOG_GROUP}, streams {job_name}/*"
    try:
        streams = [s["logStreamName"] for s in client.describe_log_streams(
            logGroupName=LOG_GROUP, logStreamNamePrefix=f"{job_name}/", limit=_MAX_STREAMS)["logStreams"]]
        events: list[tuple[int, int, str, str]] = []
        for order, stream in enumerate(streams):
            answer = client.get_log_events(logGroupName=LOG_GROUP, logStreamName=stream, startFromHead=False,
                                           limit=limit)
            events += [(e["timestamp"], order, stream, e["message"]) for e in answer["events"]]
    except Exception as exc:
        code = getattr(exc, "response", {}).get("Error", {}).get("Code") or type(exc).__name__
        if code == "ResourceNotFoundException":
            return LogTail(source=source, note=f"the log group {LOG_GROUP} does not exist (nothing logged yet)")
        hint = (" (the connection's role needs logs:DescribeLogStreams and logs:GetLogEvents on it)"
                if "AccessDenied" in code or "Unauthorized" in code else "")
        return LogTail(source=source, note=f"reading {LOG_GROUP} failed: {code}: {_first_line(exc)}{hint}")
    if not streams:
        return LogTail(source=source, note=f"the job has no log streams in {LOG_GROUP}")
    events.sort()
    several = len(streams) > 1
    lines = [f"[{stream.split('/', 1)[-1]}] {message.rstrip()}" if several else message.rstrip()
             for _, _, stream, message in events[-limit:]]
    return LogTail(lines, source)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:300]


class LocalJobLog:
    """A local job's log: a :class:`~airflow_bt.logs.LogLike` for the engine that passes every call on to
    ``log`` (the task's) and keeps the last ``keep`` lines of INFO and above, plus the job's model output
    (:meth:`model_output`, a listener of :mod:`airflow_bt.transform.runtime.output`)."""

    def __init__(self, log: LogLike, keep: int = KEEP_LINES) -> None:
        self.log = log
        self._lines: deque[str] = deque(maxlen=keep)
        self._lock = threading.Lock()

    def _keep(self, level: str, msg: str, args: tuple[Any, ...]) -> None:
        try:
            text = msg % args if args else msg
        except (TypeError, ValueError):
            text = f"{msg} {args}"
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
        with self._lock:
            self._lines.extend(f"{stamp} {level} {line}" for line in str(text).splitlines() or [""])

    def lines(self) -> list[str]:
        with self._lock:
            return list(self._lines)

    def model_output(self, line: str) -> None:
        self._keep("MODEL", "%s", (line,))
        self.log.info("[model] %s", line)

    def debug(self, msg: str, /, *args: Any, **kwargs: Any) -> Any:
        return self.log.debug(msg, *args, **kwargs)

    def info(self, msg: str, /, *args: Any, **kwargs: Any) -> Any:
        self._keep("INFO", msg, args)
        return self.log.info(msg, *args, **kwargs)

    def warning(self, msg: str, /, *args: Any, **kwargs: Any) -> Any:
        self._keep("WARNING", msg, args)
        return self.log.warning(msg, *args, **kwargs)

    def error(self, msg: str, /, *args: Any, **kwargs: Any) -> Any:
        self._keep("ERROR", msg, args)
        return self.log.error(msg, *args, **kwargs)

    def exception(self, msg: str, /, *args: Any, **kwargs: Any) -> Any:
        import sys
        import traceback

        self._keep("ERROR", msg, args)
        exc = sys.exc_info()[1]
        if exc is not None:
            self._keep("ERROR", "%s", ("".join(traceback.format_exception_only(type(exc), exc)).strip(),))
        return self.log.exception(msg, *args, **kwargs)
