"""The local engine: runs a ``CreateTransformJob`` request with Batch Transform semantics.

:func:`run_transform_job` validates the request and the ``CreateModel`` request, lists the
input objects, and runs them through model runtimes: in this process for one instance,
or in ``InstanceCount`` spawned worker processes (each loads the model itself; whole
objects are spread over instances, balanced by size). It returns a
``DescribeTransformJob``-shaped dict with ``TransformJobStatus`` ``Completed`` or
``Failed``; only invalid requests raise (:class:`TransformSpecError`), before anything runs.

Knobs left unset (``MaxConcurrentTransforms``, ``MaxPayloadInMB``, ``BatchStrategy``) come
from the model's ``execution_parameters()``, then the defaults (1, 6, ``MultiRecord``).
As with a real container, the ``SAGEMAKER_*`` environment the model starts with holds
the request's values or the defaults, since the container is up before it is asked.

``ModelClientConfig``: a request is retried ``InvocationsMaxRetries`` times (default 3,
as in SageMaker); an attempt with no answer after ``InvocationsTimeoutInSeconds`` (default
600) is abandoned and counts as failed, so a hung model cannot hang the job
(:mod:`airflow_bt.transform.invoker`).

``DataProcessing`` (``InputFilter``, ``JoinSource=Input``, ``OutputFilter``) is applied per
record for CSV and JSON / JSON Lines (:mod:`airflow_bt.records.dataprocessing`).

``dead_letter=True`` (opt-in, beyond what the service offers) isolates the records the model
rejects instead of failing their object: they go to ``<S3OutputPath>/errors/<key>.jsonl``, the
rest are scored, and ``LocalEngineStats`` counts them (:mod:`airflow_bt.transform.dead_letter`).

The model runtime comes from the ``CreateModel`` request (:func:`~airflow_bt.transform.runtime.open_runtime`):
a Python handler in ``ModelDataUrl``, a running container at an ``http(s)://`` ``Image``, or
a command in ``AIRFLOW_BT_SERVE_COMMAND`` that the engine starts per instance.

``policy`` (:mod:`airflow_bt.transform.runtime.policy`) says what the engine may open and run for
the request's sender: everything for the user's own requests (the default), less for the network
service. Every storage lookup and every model runtime goes through it. Every process the engine
starts (instance workers, serve commands) dies with it, even when it is SIGKILLed
(:mod:`airflow_bt.transform.runtime.children`).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import multiprocessing
import os
import queue as queue_mod
import sys
import time
import types
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timezone
from typing import Any

from airflow_bt.logs import LogLike
from airflow_bt.storage import Storage, for_uri, join_uri, scheme_of
from airflow_bt.transform.dead_letter import DEFAULT_MAX_RECORDS, ERRORS_FOLDER
from airflow_bt.transform.instance import Event, Instance, InstanceSpec, ObjectResult, instance_main
from airflow_bt.transform.plan import InputError, InputObject, assign_instances, list_inputs
from airflow_bt.transform.runtime import EMBEDDED, SERVE_COMMAND_ENV, EnginePolicy, runtime_kind
from airflow_bt.transform.runtime.policy import model_uris, request_uris
from airflow_bt.transform.spec import TransformSpecError, validate_model_request, validate_transform_request

Progress = Callable[[int, int, int], None]
LOG_EVERY_S = 5.0
MAX_FAILURE_REASON = 1024
_log = logging.getLogger(__name__)


def transform_job_arn(name: str) -> str:
    """The fake ARN the local engine gives a job."""
    return f"arn:aws:sagemaker:local:000000000000:transform-job/{name}"


def _check_supported(request: Mapping[str, Any], model_request: Mapping[str, Any]) -> None:
    if request["ModelName"] != model_request["ModelName"]:
        raise TransformSpecError("ModelName", f"names model {request['ModelName']!r} but the CreateModel "
                                              f"request is for {model_request['ModelName']!r}")
    container = model_request["PrimaryContainer"]
    if runtime_kind(model_request) == "python" and not container.get("ModelDataUrl"):
        raise TransformSpecError(
            "PrimaryContainer.ModelDataUrl",
            f"is required by the local engine for image {container.get('Image')!r}: it loads the Python handler "
            f"(code/inference.py) from it. For a container, set Image to its http(s):// URL or put "
            f"{SERVE_COMMAND_ENV} in PrimaryContainer.Environment")


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
        self.knobs: Any = None
        self.done_instances: set[int] = set()
        self.records_done = 0
        self.in_progress: dict[int, int] = {}

    def _rate(self, records: int, seconds: float) -> float:
        return records / seconds if seconds > 0 else 0.0

    def handle(self, event: Event) -> None:
        kind, instance = event[0], event[1]
        if kind == "started":
            if self.knobs is None:
                self.knobs = event[2]
            self.log.info("instance %d started: %s", instance, event[2].as_request_fields())
        elif kind == "progress":
            _, _, index, key, records, seconds = event
            self.in_progress[instance] = records
            now = time.monotonic()
            if now - self.last_log >= LOG_EVERY_S:
                self.last_log = now
                self.log.info("object %d of %d %s: %d records so far, %.0f records/s",
                              index + 1, self.total, key, records, self._rate(records, seconds))
            self._report()
        elif kind == "object":
            result: ObjectResult = event[2]
            self.results.append(result)
            self.in_progress.pop(instance, None)
            self.records_done += result.records
            if result.error:
                self.log.error("object %d of %d %s failed: %s", len(self.results), self.total, result.key,
                               result.error)
            else:
                self.log.info("object %d of %d %s: %d records, %.0f records/s", len(self.results), self.total,
                              result.key, result.records, self._rate(result.records, result.seconds))
            if result.rejected:
                self.log.warning("dead-letter: %d record(s) of %s rejected by the model (first: %s); written to %s",
                                 result.rejected, result.uri, result.first_rejected, result.errors_uri)
            self._report()
        elif kind == "failed":
            self.instance_errors.append(event[2])
            self.log.error("instance %d failed: %s", instance, event[2])
        elif kind == "done":
            self.done_instances.add(instance)

    def _report(self) -> None:
        if self.progress is None:
            return
        try:
            self.progress(len(self.results), self.total, self.records_done + sum(self.in_progress.values()))
        except Exception:  # progress is advisory: a broken callback must not fail the job
            self.log.exception("the progress callback failed; the job goes on")


def _run_in_process(spec: InstanceSpec, monitor: _Monitor) -> None:
    Instance(spec, monitor.handle).run()


@contextlib.contextmanager
def _bare_main_module() -> Iterator[None]:
    """Hide ``__main__`` while starting spawned workers.

    ``spawn`` re-runs the parent's main script in every child (for an Airflow worker that is
    the ``airflow`` or ``celery`` command, which imports all of Airflow). The workers need
    nothing from ``__main__``: their entry point lives in this package.
    """
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        if main is not None:
            sys.modules["__main__"] = main


@contextlib.contextmanager
def _children_allowed() -> Iterator[None]:
    """Let a daemonic process start the instance workers.

    Airflow 2's LocalExecutor and Celery's prefork pool run tasks inside daemonic processes,
    and ``multiprocessing`` refuses to start children there ("daemonic processes are not
    allowed to have children"). The flag guards against orphans; the engine stops its
    workers itself on every exit path (see ``_run_processes``), so it is lifted while starting.
    """
    current = multiprocessing.current_process()
    config = getattr(current, "_config", {})
    daemonic = bool(config.get("daemon"))
    if daemonic:
        config["daemon"] = False
    try:
        yield
    finally:
        if daemonic:
            config["daemon"] = True


def _run_processes(specs: list[InstanceSpec], monitor: _Monitor) -> None:
    ctx = multiprocessing.get_context("spawn")
    events: Any = ctx.Queue()
    rejected = ctx.Value("q", 0)  # the job's dead-lettered records, counted across the instances
    # The workers die with this process: a parent-death signal tied to this thread (which stays in this
    # function until they are gone), and a pipe whose only writer is this process (EOF: the engine died).
    parent_alive, alive_writer = ctx.Pipe(duplex=False)
    parent_pid = os.getpid()
    procs = [ctx.Process(target=instance_main, args=(spec, events, rejected, parent_pid, parent_alive),
                         name=f"airflow-bt-instance-{spec.instance}") for spec in specs]
    finished = False
    try:
        with _bare_main_module(), _children_allowed():
            for proc in procs:
                proc.start()
        active = {spec.instance: proc for spec, proc in zip(specs, procs, strict=True)}
        while active:
            try:
                event = events.get(timeout=0.5)
            except queue_mod.Empty:
                dead = [i for i, p in active.items() if not p.is_alive()]
                if not dead:
                    continue
                try:  # a worker that exited may still have events in the pipe
                    while True:
                        event = events.get(timeout=0.2)
                        monitor.handle(event)
                        if event[0] == "done":
                            active.pop(event[1], None)
                except queue_mod.Empty:
                    pass
                for i in dead:
                    if i in active:
                        monitor.handle(("failed", i, f"instance {i} exited with code {active[i].exitcode} "
                                                     "before finishing its objects"))
                        active.pop(i)
                continue
            monitor.handle(event)
            if event[0] == "done":
                active.pop(event[1], None)
        finished = True
    finally:
        for proc in procs:  # on an error or a kill of the task, stop the workers at once
            if proc.pid is not None:
                proc.join(timeout=10 if finished else 0)
                if proc.is_alive():
                    proc.terminate()
                    proc.join()
        parent_alive.close()
        alive_writer.close()
        events.close()
        events.join_thread()


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
    reason = reasons[0] + (f" (and {more} more object{'s' if more > 1 else ''} failed)" if more else "")
    return reason if len(reason) <= MAX_FAILURE_REASON else reason[: MAX_FAILURE_REASON - 3] + "..."


def run_transform_job(
    request: dict[str, Any], model_request: dict[str, Any], *, aws_conn_id: str | None = None,
    log: LogLike | None = None, progress: Progress | None = None, dead_letter: bool = False,
    dead_letter_max_records: int = DEFAULT_MAX_RECORDS, policy: EnginePolicy = EMBEDDED,
) -> dict[str, Any]:
    """Run a ``CreateTransformJob`` request locally and return its ``DescribeTransformJob``-shaped result.

    Raises :class:`TransformSpecError` for an invalid request, before anything runs. Everything
    else (no input, a model that cannot load, a record the model cannot score) ends in
    ``TransformJobStatus="Failed"`` with a ``FailureReason``; objects whose requests all
    succeeded still get their ``.out`` objects. ``progress(objects_done, objects_total,
    records_done)`` is called after each object and about once a second while objects run.

    With ``dead_letter`` the records the model rejects are isolated and written to
    ``<S3OutputPath>/errors/<key>.jsonl`` instead of failing their object, up to
    ``dead_letter_max_records`` for the job (:mod:`airflow_bt.transform.dead_letter`); the job is
    ``Completed`` if every object was scored but for such records. ``LocalEngineStats`` has
    ``rejected`` (records) and ``rejected_objects`` (objects with at least one) either way.

    ``policy`` limits the URIs the engine opens and the models it runs: what the requests name directly
    is checked before anything runs (:class:`TransformSpecError`); a URI found later, such as a
    manifest's ``prefix``, fails the job naming it.
    """
    if dead_letter_max_records < 0:
        raise ValueError(f"dead_letter_max_records must be >= 0, got {dead_letter_max_records}")
    validate_transform_request(request)
    validate_model_request(model_request)
    _check_supported(request, model_request)
    policy.check_request(request, model_request)
    log = log or _log
    name = request["TransformJobName"]
    started_at = datetime.now(timezone.utc)

    storages: dict[str, Storage] = {}
    for _, uri in request_uris(request) + model_uris(model_request):
        if uri.startswith(("s3://", "file://")) and scheme_of(uri) not in storages:
            storages[scheme_of(uri)] = for_uri(uri, aws_conn_id=aws_conn_id)

    def any_storage_for(uri: str) -> Storage:
        return storages.get(scheme_of(uri)) or for_uri(uri, aws_conn_id=aws_conn_id)

    storage_for = policy.guard(any_storage_for)  # every URI the engine opens, at any depth, obeys the policy

    instance_count = request["TransformResources"]["InstanceCount"]
    monitor = _Monitor(0, log, progress)
    objects: list[InputObject] = []
    input_error: str | None = None
    try:
        objects = list_inputs(request, storage_for, need_sizes=instance_count > 1)
    except InputError as exc:
        input_error = str(exc)
    except Exception as exc:  # storage errors: a missing bucket, no credentials, a missing manifest
        source = request["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"]
        input_error = f"listing the input {source} failed: {type(exc).__name__}: {exc}"
    if objects:
        monitor.total = len(objects)
        groups = assign_instances(objects, instance_count)
        log.info("transform job %s: %d objects on %d instance(s)", name, len(objects), len(groups))

        def spec(i: int, group: list[InputObject], stores: dict[str, Storage]) -> InstanceSpec:
            return InstanceSpec(i, request, model_request, group, stores, dead_letter=dead_letter,
                                dead_letter_max_records=dead_letter_max_records, policy=policy)

        if len(groups) == 1:
            _run_in_process(spec(0, groups[0], storages), monitor)
        else:
            portable = {scheme: store.portable() for scheme, store in storages.items()}
            _run_processes([spec(i, group, portable) for i, group in enumerate(groups)], monitor)

    ended_at = datetime.now(timezone.utc)
    reason = input_error or _failure_reason(objects, monitor)
    seconds = time.monotonic() - monitor.start
    records = sum(r.records for r in monitor.results)
    ok = {r.index for r in monitor.results if not r.error}
    stats = {
        "objects": len(objects),
        "objects_failed": len(objects) - len(ok),
        "records": records,
        "requests": sum(r.requests for r in monitor.results),
        "bytes_in": sum(r.bytes_in for r in monitor.results),
        "payload_bytes": sum(r.payload_bytes for r in monitor.results),
        "seconds": seconds,
        "records_per_second": records / seconds if seconds > 0 else 0.0,
        "rejected": sum(r.rejected for r in monitor.results),
        "rejected_objects": sum(1 for r in monitor.results if r.rejected),
    }
    status = "Failed" if reason else "Completed"
    if dead_letter:
        log.info("dead-letter: %d record(s) of %d object(s) rejected by the model; errors under %s",
                 stats["rejected"], stats["rejected_objects"],
                 join_uri(request["TransformOutput"]["S3OutputPath"], ERRORS_FOLDER) + "/")
    log.info("transform job %s %s: %d of %d objects, %d records in %.1f s (%.0f records/s)", name, status,
             len(ok), len(objects), records, seconds, stats["records_per_second"])
    result: dict[str, Any] = {
        "TransformJobName": name,
        "TransformJobArn": transform_job_arn(name),
        "TransformJobStatus": status,
        "ModelName": request["ModelName"],
    }
    if reason:
        result["FailureReason"] = reason
    if monitor.knobs is not None:
        result.update(monitor.knobs.as_request_fields())
    for key in ("ModelClientConfig", "Environment", "TransformInput", "TransformOutput", "TransformResources",
                "DataProcessing"):
        if request.get(key) is not None:
            result[key] = copy.deepcopy(request[key])
    result.update(CreationTime=started_at, TransformStartTime=started_at, TransformEndTime=ended_at,
                  LocalEngineStats=stats)
    return result
