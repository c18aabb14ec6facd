"""The ``local`` backend: jobs on the local engine, in the task's process, described like SageMaker's.

Each job runs in a thread of the task process (:func:`~airflow_bt.transform.local_engine.run_transform_job`),
so the task's main thread waits for it as it waits for a SageMaker job, and a stop (the operator's
timeout, ``on_kill``) reaches the engine through an event. Each job leaves two records beside the
run's job outputs, written create-only:

- ``<jobs prefix>/<job name>.job.json`` when it is created (its request, secret-named environment
  values shown as ``***`` as ``DescribeTransformJob`` shows them; a name already taken means another
  process created that job first);
- ``<jobs prefix>/<job name>.end.json`` when it ends (its final description with the engine's stats);
- ``<jobs prefix>/<job name>.log.json`` just before: the last lines of its log (what the engine logged and
  what its model processes printed: :class:`~airflow_bt.transform.backends.job_logs.LocalJobLog`), the
  tail a failed job's task log ends with (:meth:`LocalBackend.log_tail`, also for a retry in another process).

:meth:`LocalBackend.describe` reads them, so a retry finds the jobs of earlier tries exactly as on
SageMaker. A job this process did not start and that has no end record died with the task process
that ran it (local jobs never outlive their task): it is described as ``Failed``, and the retry
reuses the shards it finished.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from airflow_bt.logs import LogLike
from airflow_bt.storage import ObjectExistsError, ObjectNotFoundError, Storage, join_uri
from airflow_bt.transform.backends.base import TransformBackend
from airflow_bt.transform.backends.job_logs import LocalJobLog, LogTail
from airflow_bt.transform.model_package import DescribePackage, package_of, resolve_model_package
from airflow_bt.transform.status import JobWaitTimeout, TransformJobStatus

#: Seconds a stop waits for the engine to finish its cleanup (instance processes, model servers).
STOP_GRACE_S = 30.0
DIED_WITH_TASK = ("the task process that ran this local job ended before the job did (a crash, a kill or a "
                  "timeout of that try); the shards it finished are reused")
_DESCRIBED = ("ModelName", "MaxConcurrentTransforms", "MaxPayloadInMB", "BatchStrategy", "ModelClientConfig",
              "Environment", "TransformInput", "TransformOutput", "TransformResources", "DataProcessing",
              "DataCaptureConfig")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


@dataclass
class _Running:
    """A job this process runs: its thread, the stop event the engine watches, its end."""

    thread: threading.Thread
    log: LocalJobLog
    stop: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)


class LocalBackend(TransformBackend):
    """:class:`TransformBackend` on the local engine.

    :param store: the storage of ``jobs_prefix`` (the records) — the job's own input and output may
        be anywhere the engine reaches.
    :param jobs_prefix: where this run's job records live (``<run prefix>/transform/``).
    :param aws_conn_id: the AWS connection the engine uses for ``s3://`` outputs.
    :param log: the task's log (the engine's progress lines go there).
    :param mask: returns a copy of a request with secret-named environment values hidden.
    :param dead_letter: isolate the records the model rejects (:mod:`airflow_bt.transform.dead_letter`).
    :param dead_letter_max_records: more rejected records than this fail the job.
    :param describe_package: ``DescribeModelPackage`` for a model made from a Model Registry package
        (:mod:`airflow_bt.transform.model_package`); the engine runs the container the package names.
    """

    name = "local"
    can_defer = False
    needs_model_request = True

    def __init__(self, store: Storage, jobs_prefix: str, *, aws_conn_id: str | None, log: LogLike,
                 mask: Callable[[dict[str, Any]], dict[str, Any]] = copy.deepcopy, dead_letter: bool = False,
                 dead_letter_max_records: int = 100, describe_package: DescribePackage | None = None) -> None:
        self.store = store
        self.jobs_prefix = jobs_prefix
        self.aws_conn_id = aws_conn_id
        self.log = log
        self.mask = mask
        self.dead_letter = dead_letter
        self.dead_letter_max_records = dead_letter_max_records
        self.describe_package = describe_package
        self._models: dict[str, dict[str, Any]] = {}
        self._running: dict[str, _Running] = {}

    def _record_uri(self, job_name: str, kind: str) -> str:
        return join_uri(self.jobs_prefix, f"{job_name}.{kind}.json")

    def _read(self, uri: str) -> dict[str, Any] | None:
        try:
            return dict(json.loads(self.store.read_bytes(uri)))
        except ObjectNotFoundError:
            return None

    def _write(self, uri: str, doc: dict[str, Any]) -> None:
        self.store.put_bytes(uri, json.dumps(doc, default=str, sort_keys=True).encode())

    # -- the interface ----------------------------------------------------------------------------------

    def ensure_model(self, model_request: dict[str, Any]) -> str:
        name = str(model_request["ModelName"])
        package = package_of(model_request)
        if package is not None:
            if self.describe_package is None:
                raise ValueError(f"model {name} names model package {package}, and this backend was given no "
                                 "way to describe model packages")
            model_request = resolve_model_package(model_request, self.describe_package)
            self.log.info("model %s: model package %s runs image %s with %s", name, package,
                          model_request["PrimaryContainer"]["Image"],
                          model_request["PrimaryContainer"].get("ModelDataUrl", "no artifact"))
        self._models[name] = copy.deepcopy(model_request)
        return name

    def create_job(self, request: dict[str, Any]) -> dict[str, Any] | None:
        name = str(request["TransformJobName"])
        model = self._models.get(str(request["ModelName"]))
        if model is None:
            raise ValueError(f"model {request['ModelName']} was not created: call ensure_model first")
        described = {k: request[k] for k in _DESCRIBED if request.get(k) is not None}
        record = {"TransformJobName": name, "TransformJobStatus": "InProgress", "CreationTime": _now(),
                  **self.mask(described)}
        try:
            self._write(self._record_uri(name, "job"), record)
        except ObjectExistsError:
            self.log.info("local transform job %s already exists (created by another process): attaching to it",
                          name)
            return self.describe(name)
        running = _Running(threading.Thread(target=self._run, args=(name, request, model), daemon=True,
                                            name=f"transform-{name}"), LocalJobLog(self.log))
        self._running[name] = running
        running.thread.start()
        self.log.info("started local transform job %s", name)
        return None

    def describe(self, job_name: str) -> dict[str, Any] | None:
        end = self._read(self._record_uri(job_name, "end"))
        if end is not None:
            return end
        record = self._read(self._record_uri(job_name, "job"))
        if record is None:
            return None
        running = self._running.get(job_name)
        if running is not None and not running.done.is_set():
            record["TransformJobStatus"] = "Stopping" if running.stop.is_set() else "InProgress"
            return record
        if running is not None:  # it ended here but its end record could not be written
            return {**record, "TransformJobStatus": "Failed",
                    "FailureReason": "the job ended but its end record could not be written"}
        return {**record, "TransformJobStatus": "Failed", "FailureReason": DIED_WITH_TASK}

    def stop(self, job_name: str) -> None:
        running = self._running.get(job_name)
        if running is None or running.done.is_set():
            self.log.info("local transform job %s was not stopped: it is not running here", job_name)
            return
        running.stop.set()
        self.log.warning("stopping local transform job %s", job_name)
        if not running.done.wait(STOP_GRACE_S):
            self.log.warning("local transform job %s did not stop within %.0f s", job_name, STOP_GRACE_S)

    def wait(self, job_name: str, *, check_interval: float, deadline: float | None) -> dict[str, Any]:
        """Wait on the job's end event (no polling); ``check_interval`` does not apply."""
        import time

        running = self._running.get(job_name)
        if running is not None:
            timeout = None if deadline is None else max(0.0, deadline - time.time())
            if not running.done.wait(timeout):
                raise JobWaitTimeout(f"local transform job {job_name} was still running at its deadline")
        description = self.describe(job_name)
        if description is None:
            raise ValueError(f"there is no local transform job {job_name}")
        return description

    def log_tail(self, job_name: str, limit: int) -> LogTail:
        """The job's log as this process kept it, else as its ``.log.json`` record holds it."""
        running = self._running.get(job_name)
        uri = self._record_uri(job_name, "log")
        if running is not None:
            lines, source = running.log.lines(), f"the local engine's log of the job, also in {uri}"
        else:
            record = self._read(uri)
            if record is None:
                return LogTail(note=f"no log of local job {job_name} was kept ({uri} does not exist: the task "
                                    "process that ran it ended before the job did)")
            lines, source = [str(line) for line in record.get("lines") or []], uri
        return LogTail(lines[-limit:], source) if lines else LogTail(source=source, note="the job logged nothing")

    # -- the job's thread -------------------------------------------------------------------------------

    def _write_log(self, name: str, log: LocalJobLog) -> None:
        try:
            self._write(self._record_uri(name, "log"), {"TransformJobName": name, "lines": log.lines()})
        except Exception:  # the job's result matters more than its log
            self.log.warning("could not write the log of local transform job %s", name, exc_info=True)

    def _run(self, name: str, request: dict[str, Any], model: dict[str, Any]) -> None:
        from airflow_bt.transform.backends.local import run_local
        from airflow_bt.transform.runtime.output import add_listener, remove_listener

        running = self._running[name]
        add_listener(running.log.model_output)  # the output of the model processes this job starts
        try:
            try:
                description = run_local(request, model, aws_conn_id=self.aws_conn_id, log=running.log,
                                        dead_letter=self.dead_letter,
                                        dead_letter_max_records=self.dead_letter_max_records, stop=running.stop)
            except Exception as exc:  # the engine itself broke: the job fails, the task sees why
                running.log.exception("local transform job %s failed", name)
                description = {"TransformJobName": name, "TransformJobStatus": TransformJobStatus.FAILED.value,
                               "FailureReason": f"{type(exc).__name__}: {exc}"[:1024],
                               "ModelName": request["ModelName"], "TransformEndTime": _now()}
            finally:
                remove_listener(running.log.model_output)
            self._write_log(name, running.log)
            self._write(self._record_uri(name, "end"), self.mask(description))
        except Exception:
            self.log.exception("could not record the end of local transform job %s", name)
        finally:
            running.done.set()
