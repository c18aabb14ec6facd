"""The local engine: runs a ``CreateTransformJob`` request with Batch Transform semantics.

:func:`run_transform_job` validates the request and the ``CreateModel`` request, lists the
input objects, and runs them through model runtimes: in this process for one instance,
or in ``InstanceCount`` spawned worker processes (each loads the model itself; whole
objects are spread over instances, balanced by size). It returns a
``DescribeTransformJob``-shaped dict with ``TransformJobStatus`` ``Completed``, ``Failed``
or ``Stopped``; only invalid requests raise (:class:`TransformSpecError`), before anything runs.
The instances report through events (:data:`~airflow_bt.transform.events.Event`), which
``_Monitor`` (:mod:`airflow_bt.transform.monitor`) turns into stats, log lines and ``progress`` calls;
the worker processes are started and watched by :mod:`airflow_bt.transform.workers`.

``stop`` (a ``threading.Event``, set from any thread) is ``StopTransformJob``: an in-process
instance stops before its next request, worker processes are terminated on the next poll of
their event queue (every :data:`~airflow_bt.transform.workers.QUEUE_POLL_S`), and the job ends
``Stopped``. An object cut short never gets a ``.out`` (outputs are written create-only as a whole);
those finished keep theirs.
Nothing needs the main thread: the engine may run in a worker thread while another one stops it.

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

import copy
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from airflow_bt.logs import LogLike
from airflow_bt.storage import Storage, for_uri, join_uri, scheme_of
from airflow_bt.transform.dead_letter import DEFAULT_MAX_RECORDS, ERRORS_FOLDER
from airflow_bt.transform.instance import Instance, InstanceSpec
from airflow_bt.transform.monitor import Progress as Progress
from airflow_bt.transform.monitor import _failure_reason, _stats, _stop_reason
from airflow_bt.transform.monitor import _Monitor as _Monitor
from airflow_bt.transform.plan import InputError, InputObject, assign_instances, list_inputs
from airflow_bt.transform.runtime import EMBEDDED, SERVE_COMMAND_ENV, EnginePolicy, runtime_kind
from airflow_bt.transform.runtime.base import StorageResolver
from airflow_bt.transform.runtime.policy import model_uris, request_uris
from airflow_bt.transform.spec import TransformSpecError, validate_model_request, validate_transform_request
from airflow_bt.transform.workers import _run_processes

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


def _run_in_process(spec: InstanceSpec, monitor: _Monitor, stop: threading.Event | None = None) -> None:
    Instance(spec, monitor.handle, stop=stop).run()


@dataclass(frozen=True)
class _Job:
    """What every phase of :func:`run_transform_job` needs to know about the job."""

    request: dict[str, Any]
    model_request: dict[str, Any]
    log: LogLike
    dead_letter: bool
    dead_letter_max_records: int
    policy: EnginePolicy
    stop: threading.Event | None

    @property
    def name(self) -> str:
        name: str = self.request["TransformJobName"]
        return name

    def stopping(self) -> bool:
        return self.stop is not None and self.stop.is_set()

    def spec(self, i: int, group: list[InputObject], storages: dict[str, Storage]) -> InstanceSpec:
        return InstanceSpec(i, self.request, self.model_request, group, storages, dead_letter=self.dead_letter,
                            dead_letter_max_records=self.dead_letter_max_records, policy=self.policy)


def run_transform_job(
    request: dict[str, Any], model_request: dict[str, Any], *, aws_conn_id: str | None = None,
    log: LogLike | None = None, progress: Progress | None = None, dead_letter: bool = False,
    dead_letter_max_records: int = DEFAULT_MAX_RECORDS, policy: EnginePolicy = EMBEDDED,
    stop: threading.Event | None = None,
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

    ``stop``: set it (from any thread; this function may run in any thread) to end the job early, as
    ``StopTransformJob`` does. Its instances stop before their next request (worker processes are
    terminated), the object each was writing gets no ``.out``, and the result is
    ``TransformJobStatus="Stopped"``; the objects finished before keep their ``.out``. A stop that
    comes after every object finished changes nothing.
    """
    _check_job(request, model_request, policy, dead_letter_max_records)
    job = _Job(request, model_request, log or _log, dead_letter, dead_letter_max_records, policy, stop)
    started_at = datetime.now(timezone.utc)
    storages = _open_storages(request, model_request, aws_conn_id)
    monitor = _Monitor(0, job.log, progress)
    objects, input_error = _list_objects(request, policy.guard(_resolver(storages, aws_conn_id)))
    monitor.total = len(objects)
    if objects and not job.stopping():
        _run_instances(job, objects, storages, monitor)
    description = _describe(job, objects, monitor, input_error, started_at)
    if request.get("DataCaptureConfig"):
        _capture(job, monitor, policy.guard(_resolver(storages, aws_conn_id)), description)
    return description


def _capture(job: _Job, monitor: _Monitor, storage_for: StorageResolver, description: dict[str, Any]) -> None:
    """``DataCaptureConfig``: manifests of the objects the job read and wrote (:mod:`.data_capture`)."""
    from airflow_bt.transform.data_capture import write_capture

    config = job.request["DataCaptureConfig"]
    done = sorted((r for r in monitor.results if not r.error), key=lambda r: r.index)
    try:
        written = write_capture(storage_for(config["DestinationS3Uri"]), config, job.name,
                                description["TransformEndTime"], [r.uri for r in done], [r.out_uri for r in done])
    except Exception as exc:  # the job's outputs stand; the capture is what is missing, and the job says so
        description["TransformJobStatus"] = "Failed"
        description["FailureReason"] = f"data capture to {config['DestinationS3Uri']} failed: " \
                                       f"{type(exc).__name__}: {exc}"[:1024]
        job.log.error("transform job %s: %s", job.name, description["FailureReason"])
        return
    description["DataCaptureConfig"] = dict(config)
    for kind, uri in written.items():
        job.log.info("transform job %s: data capture of its %s -> %s", job.name, kind, uri)


def _check_job(request: dict[str, Any], model_request: dict[str, Any], policy: EnginePolicy,
               dead_letter_max_records: int) -> None:
    """Raise for a job that must not start: an invalid request, or one the policy refuses."""
    if dead_letter_max_records < 0:
        raise ValueError(f"dead_letter_max_records must be >= 0, got {dead_letter_max_records}")
    validate_transform_request(request)
    validate_model_request(model_request)
    _check_supported(request, model_request)
    policy.check_request(request, model_request)


def _open_storages(request: dict[str, Any], model_request: dict[str, Any], aws_conn_id: str | None
                   ) -> dict[str, Storage]:
    """One storage per scheme the requests name (``s3``, ``file``), shared by the job's instances."""
    storages: dict[str, Storage] = {}
    for _, uri in request_uris(request) + model_uris(model_request):
        if uri.startswith(("s3://", "file://")) and scheme_of(uri) not in storages:
            storages[scheme_of(uri)] = for_uri(uri, aws_conn_id=aws_conn_id)
    return storages


def _resolver(storages: dict[str, Storage], aws_conn_id: str | None) -> StorageResolver:
    def any_storage_for(uri: str) -> Storage:
        return storages.get(scheme_of(uri)) or for_uri(uri, aws_conn_id=aws_conn_id)

    return any_storage_for


def _list_objects(request: dict[str, Any], storage_for: StorageResolver) -> tuple[list[InputObject], str | None]:
    """The job's input objects, or none and why (an :class:`InputError`, a storage error)."""
    try:
        need_sizes = request["TransformResources"]["InstanceCount"] > 1
        return list_inputs(request, storage_for, need_sizes=need_sizes), None
    except InputError as exc:
        return [], str(exc)
    except Exception as exc:  # storage errors: a missing bucket, no credentials, a missing manifest
        source = request["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"]
        return [], f"listing the input {source} failed: {type(exc).__name__}: {exc}"


def _run_instances(job: _Job, objects: list[InputObject], storages: dict[str, Storage], monitor: _Monitor) -> None:
    """Spread the objects over the instances and run them: here for one, in worker processes for more."""
    groups = assign_instances(objects, job.request["TransformResources"]["InstanceCount"])
    job.log.info("transform job %s: %d objects on %d instance(s)", job.name, len(objects), len(groups))
    if len(groups) == 1:
        _run_in_process(job.spec(0, groups[0], storages), monitor, job.stop)
    else:
        portable = {scheme: store.portable() for scheme, store in storages.items()}
        _run_processes([job.spec(i, group, portable) for i, group in enumerate(groups)], monitor, job.stop)


def _outcome(job: _Job, objects: list[InputObject], monitor: _Monitor, input_error: str | None
             ) -> tuple[str, str | None]:
    """``TransformJobStatus`` and ``FailureReason``; a stop counts if it kept an object from finishing."""
    if job.stopping() and len(monitor.results) < len(objects):
        return "Stopped", _stop_reason(objects, monitor)
    reason = input_error or _failure_reason(objects, monitor)
    return ("Failed" if reason else "Completed"), reason


def _describe(job: _Job, objects: list[InputObject], monitor: _Monitor, input_error: str | None,
              started_at: datetime) -> dict[str, Any]:
    """The ``DescribeTransformJob``-shaped result, logged."""
    ended_at = datetime.now(timezone.utc)
    status, reason = _outcome(job, objects, monitor, input_error)
    stats = _stats(objects, monitor)
    request = job.request
    if job.dead_letter:
        job.log.info("dead-letter: %d record(s) of %d object(s) rejected by the model; errors under %s",
                     stats["rejected"], stats["rejected_objects"],
                     join_uri(request["TransformOutput"]["S3OutputPath"], ERRORS_FOLDER) + "/")
    job.log.info("transform job %s %s: %d of %d objects, %d records in %.1f s (%.0f records/s)", job.name, status,
                 len(objects) - stats["objects_failed"], len(objects), stats["records"], stats["seconds"],
                 stats["records_per_second"])
    result: dict[str, Any] = {
        "TransformJobName": job.name,
        "TransformJobArn": transform_job_arn(job.name),
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
