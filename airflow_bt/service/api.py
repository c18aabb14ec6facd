"""The SageMaker actions the local service implements, over in-memory state.

Models: ``CreateModel``, ``DescribeModel``, ``DeleteModel``. Transform jobs: ``CreateTransformJob``,
``DescribeTransformJob``, ``ListTransformJobs``, ``StopTransformJob``. Requests are checked with
:mod:`airflow_bt.transform.spec` (a :class:`TransformSpecError` becomes ``ValidationException``);
errors use the service's shapes: ``ValidationException`` (bad request; "Could not find" for
Describe/Delete, as SageMaker answers), ``ResourceInUse`` (a job name taken), ``ResourceNotFound``
(stopping a job that does not exist). Jobs go ``InProgress`` -> ``Completed`` | ``Failed``, or
``Stopping`` -> ``Stopped``, with ``CreationTime``, ``TransformStartTime``, ``TransformEndTime``.
State lives in memory: a restarted service knows no models or jobs.

What a request may make the service do is one :class:`~airflow_bt.transform.runtime.EnginePolicy`:
``file://`` URIs (at any depth: manifest prefixes, artifacts, submit directories), serve commands
(``AIRFLOW_BT_SERVE_COMMAND``, a command run as the service's user), Python handler models (user
code: ``code/inference.py``, ``SAGEMAKER_PROGRAM``) and model containers off loopback (an
``http(s)://`` ``Image`` whose host is not ``localhost``/``127.0.0.0/8``/``::1``: the job would send
its input data there) are refused unless the service was started with ``--allow-file-uris`` /
``--allow-serve-commands`` / ``--allow-model-code`` / ``--allow-remote-model-urls``. An allowed
handler always runs in a child process with the container environment only, never in the worker that
holds the service's credentials. The policy travels to the job's worker, where the engine applies it to
every URI it opens and every model it starts. ``DescribeModel`` and
``DescribeTransformJob`` show ``***`` for the values of secret-named ``Environment`` variables (the
rule the operators' task logs apply, :func:`airflow_bt.compat.is_sensitive_name`).
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from airflow_bt.service.errors import ServiceError, resource_in_use, resource_not_found, validation
from airflow_bt.service.joblogs import JobLogs
from airflow_bt.service.runner import JobRunner
from airflow_bt.transform.model_package import resolve_model_package
from airflow_bt.transform.runtime.policy import EnginePolicy
from airflow_bt.transform.secrets import masked_environment
from airflow_bt.transform.spec import TransformSpecError, validate_model_request, validate_transform_request
from airflow_bt.transform.status import TransformJobStatus

_log = logging.getLogger(__name__)
STATUSES = tuple(status.value for status in TransformJobStatus)
FILE_URIS_OPT_IN = "start the service with --allow-file-uris to accept file:// URIs"
SERVE_COMMANDS_OPT_IN = ("start the service with --allow-serve-commands to let models name a command; it runs "
                         "as the service's user")
MODEL_CODE_OPT_IN = ("start the service with --allow-model-code to run Python handler models; the handler "
                     "runs as the service's user, in a child process without the service's credentials")
REMOTE_MODEL_URLS_OPT_IN = ("start the service with --allow-remote-model-urls to call model containers off "
                            "loopback")
_TRANSFORM_COPY = ("ModelName", "MaxConcurrentTransforms", "ModelClientConfig", "MaxPayloadInMB", "BatchStrategy",
                   "Environment", "TransformInput", "TransformOutput", "DataCaptureConfig", "TransformResources",
                   "DataProcessing", "ExperimentConfig")


def _now() -> datetime:
    return datetime.now(timezone.utc)


def service_policy(*, allow_file_uris: bool = False, allow_serve_commands: bool = False,
                   allow_model_code: bool = False, allow_remote_model_urls: bool = False) -> EnginePolicy:
    """What the service's engine may do: only what the service was started to allow; handlers isolated."""
    return EnginePolicy(allow_file_uris=allow_file_uris, allow_serve_commands=allow_serve_commands,
                        allow_model_code=allow_model_code, isolate_model_code=True,
                        allow_remote_model_urls=allow_remote_model_urls, file_uris_opt_in=FILE_URIS_OPT_IN,
                        serve_commands_opt_in=SERVE_COMMANDS_OPT_IN, model_code_opt_in=MODEL_CODE_OPT_IN,
                        remote_model_urls_opt_in=REMOTE_MODEL_URLS_OPT_IN)


def _time(value: Any, name: str) -> datetime:
    try:
        return datetime.fromtimestamp(float(value), timezone.utc)
    except (TypeError, ValueError):
        raise validation(f"{name} must be a timestamp, got {value!r}") from None


@dataclass
class TransformJob:
    """One job's request, model snapshot, status and times."""

    request: dict[str, Any]
    model: dict[str, Any]
    arn: str
    creation_time: datetime = field(default_factory=_now)
    status: str = "InProgress"
    failure_reason: str | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    last_modified: datetime = field(default_factory=_now)
    knobs: dict[str, Any] = field(default_factory=dict)
    runner: JobRunner | None = None
    stop_requested: bool = False

    @property
    def name(self) -> str:
        return str(self.request["TransformJobName"])

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"TransformJobName": self.name, "TransformJobArn": self.arn,
                               "TransformJobStatus": self.status}
        if self.failure_reason:
            out["FailureReason"] = self.failure_reason
        for key in _TRANSFORM_COPY:
            if key in self.request:
                out[key] = copy.deepcopy(self.request[key])
        if "Environment" in out:
            out["Environment"] = masked_environment(out["Environment"])
        for key, value in self.knobs.items():  # what the container chose for knobs the request left unset
            out.setdefault(key, value)
        out["CreationTime"] = self.creation_time
        if self.start_time is not None:
            out["TransformStartTime"] = self.start_time
        if self.end_time is not None:
            out["TransformEndTime"] = self.end_time
        return out

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"TransformJobName": self.name, "TransformJobArn": self.arn,
                               "CreationTime": self.creation_time, "LastModifiedTime": self.last_modified,
                               "TransformJobStatus": self.status}
        if self.end_time is not None:
            out["TransformEndTime"] = self.end_time
        if self.failure_reason:
            out["FailureReason"] = self.failure_reason
        return out


RunnerFactory = Callable[..., JobRunner]


class SageMakerApi:
    """The service's state and actions; thread-safe (the HTTP server calls it from many threads).

    :param region: the region in ARNs.
    :param account: the account id in ARNs.
    :param allow_file_uris: also accept ``file://`` URIs (a local extension; SageMaker takes ``s3://`` only),
        at any depth: the engine opens every URI through the same policy.
    :param allow_serve_commands: run a model's ``AIRFLOW_BT_SERVE_COMMAND`` (a local extension: anyone who
        can reach the service could run any command as its user).
    :param allow_model_code: run Python handler models (anyone who can reach the service could run any
        Python code as its user; always in a child process without the service's environment).
    :param allow_remote_model_urls: call model containers whose ``Image`` URL is not on loopback.
    :param stop_grace: seconds a stopping job gets before its processes are killed.
    :param logs: where the jobs' output lines go (:class:`~airflow_bt.service.joblogs.JobLogs`; default: memory).
    """

    ACTIONS = {
        "CreateModel": "create_model",
        "DescribeModel": "describe_model",
        "DeleteModel": "delete_model",
        "CreateModelPackage": "create_model_package",
        "DescribeModelPackage": "describe_model_package",
        "CreateTransformJob": "create_transform_job",
        "DescribeTransformJob": "describe_transform_job",
        "ListTransformJobs": "list_transform_jobs",
        "StopTransformJob": "stop_transform_job",
    }

    def __init__(self, *, region: str = "us-east-1", account: str = "000000000000", allow_file_uris: bool = False,
                 allow_serve_commands: bool = False, allow_model_code: bool = False,
                 allow_remote_model_urls: bool = False, stop_grace: float = 5.0,
                 runner_factory: RunnerFactory = JobRunner, logs: JobLogs | None = None) -> None:
        self.region = region
        self.account = account
        self.policy = service_policy(allow_file_uris=allow_file_uris, allow_serve_commands=allow_serve_commands,
                                     allow_model_code=allow_model_code,
                                     allow_remote_model_urls=allow_remote_model_urls)
        self.stop_grace = stop_grace
        self.runner_factory = runner_factory
        self.logs = logs if logs is not None else JobLogs()
        self.models: dict[str, dict[str, Any]] = {}
        self.runnable: dict[str, dict[str, Any]] = {}  # model name -> the CreateModel request a job runs
        self.packages: dict[str, dict[str, Any]] = {}  # model package name -> DescribeModelPackage
        self.jobs: dict[str, TransformJob] = {}
        self._lock = threading.RLock()
        self._closed = False

    def arn(self, kind: str, name: str) -> str:
        return f"arn:aws:sagemaker:{self.region}:{self.account}:{kind}/{name.lower()}"

    def handle(self, action: str, body: dict[str, Any]) -> dict[str, Any]:
        method = self.ACTIONS.get(action)
        if method is None:
            raise ServiceError("UnknownOperationException",
                               f"airflow-bt local-sagemaker does not implement {action!r}; it implements "
                               f"{', '.join(sorted(self.ACTIONS))}")
        if not isinstance(body, dict):
            raise ServiceError("SerializationException", "the request body must be a JSON object")
        result: dict[str, Any] = getattr(self, method)(body)
        return result

    # -- models -------------------------------------------------------------------------------------------

    def create_model(self, body: dict[str, Any]) -> dict[str, Any]:
        try:
            validate_model_request(body)
            runnable = resolve_model_package(body, self._package)
            self.policy.check_model(runnable)
        except TransformSpecError as exc:
            raise validation(str(exc)) from None
        name = body["ModelName"]
        arn = self.arn("model", name)
        with self._lock:
            if name in self.models:
                raise validation(f'Cannot create already existing model "{arn}".')
            self.models[name] = {**copy.deepcopy(body), "ModelArn": arn, "CreationTime": _now()}
            self.runnable[name] = runnable
        _log.info("created model %s", name)
        return {"ModelArn": arn}

    def _model(self, name: Any) -> dict[str, Any]:
        with self._lock:
            model = self.models.get(str(name))
        if model is None:
            raise validation(f'Could not find model "{self.arn("model", str(name))}".')
        return model

    def describe_model(self, body: dict[str, Any]) -> dict[str, Any]:
        model = copy.deepcopy(self._model(body.get("ModelName")))
        model.pop("Tags", None)
        container = model.get("PrimaryContainer")
        if isinstance(container, dict) and "Environment" in container:
            container["Environment"] = masked_environment(container["Environment"])
        return model

    def delete_model(self, body: dict[str, Any]) -> dict[str, Any]:
        name = str(body.get("ModelName"))
        self._model(name)
        with self._lock:
            self.models.pop(name, None)
            self.runnable.pop(name, None)
        _log.info("deleted model %s", name)
        return {}

    # -- model packages (a Model Registry of one account: what CreateModel's ModelPackageName names) -----

    def create_model_package(self, body: dict[str, Any]) -> dict[str, Any]:
        """An unversioned package (``ModelPackageName``) or the next version of a group
        (``ModelPackageGroupName``), with one inference container."""
        group = body.get("ModelPackageGroupName")
        name = body.get("ModelPackageName")
        if bool(group) == bool(name):
            raise validation("give exactly one of ModelPackageName and ModelPackageGroupName")
        containers = (body.get("InferenceSpecification") or {}).get("Containers")
        if not isinstance(containers, list) or not containers or not all(
                isinstance(c, dict) and isinstance(c.get("Image"), str) for c in containers):
            raise validation("InferenceSpecification.Containers needs at least one container with an Image")
        with self._lock:
            if group:
                version = 1 + sum(1 for p in self.packages.values() if p.get("ModelPackageGroupName") == group)
                key = f"{group}/{version}"
            else:
                key, version = str(name), None
            if key in self.packages:
                raise validation(f'Model package "{key}" already exists.')
            arn = self.arn("model-package", key)
            package = {**copy.deepcopy(body), "ModelPackageName": str(group or name), "ModelPackageArn": arn,
                       "ModelPackageStatus": "Completed", "CreationTime": _now()}
            if version is not None:
                package["ModelPackageVersion"] = version
            self.packages[key] = package
        _log.info("created model package %s", key)
        return {"ModelPackageArn": arn}

    def _package(self, name: str) -> dict[str, Any]:
        """A package by name, ``group/version`` or ARN."""
        key = name.split(":model-package/", 1)[1] if ":model-package/" in name else name
        with self._lock:
            package = self.packages.get(key) or next(
                (p for k, p in self.packages.items() if k.lower() == key.lower()), None)
        if package is None:
            raise validation(f'Model package "{name}" does not exist.')
        return copy.deepcopy(package)

    def describe_model_package(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._package(str(body.get("ModelPackageName")))

    # -- transform jobs ---------------------------------------------------------------------------------

    def create_transform_job(self, body: dict[str, Any]) -> dict[str, Any]:
        try:
            validate_transform_request(body)
        except TransformSpecError as exc:
            raise validation(str(exc)) from None
        name = body["TransformJobName"]
        arn = self.arn("transform-job", name)
        with self._lock:
            if self._closed:
                raise ServiceError("ServiceUnavailable", "the service is shutting down", status=503)
            if name in self.jobs:
                raise resource_in_use(f"Job name must be unique within an AWS account and region, and a job "
                                      f"with this name already exists ({arn})")
            self._model(body["ModelName"])
            model_request = copy.deepcopy(self.runnable[body["ModelName"]])
            try:  # what the requests name directly; the worker's engine checks every other URI it opens
                self.policy.check_request(body, model_request)
            except TransformSpecError as exc:
                raise validation(str(exc)) from None
            job = TransformJob(request=copy.deepcopy(body), model=model_request, arn=arn)
            self.logs.start_job(name)
            job.runner = self.runner_factory(
                name, job.request, model_request,
                on_started=lambda: self._started(job), on_finished=lambda outcome: self._finished(job, outcome),
                stop_grace=self.stop_grace, policy=self.policy,
                on_output=lambda line, instance: self.logs.write(name, line, instance),
            )
            self.jobs[name] = job
            job.runner.start()
        _log.info("created transform job %s (model %s, %d instance(s))", name, body["ModelName"],
                  body["TransformResources"]["InstanceCount"])
        return {"TransformJobArn": arn}

    def _started(self, job: TransformJob) -> None:
        with self._lock:
            job.start_time = job.last_modified = _now()

    def _finished(self, job: TransformJob, outcome: dict[str, Any] | None) -> None:
        # every line is in the job's log streams before it shows a terminal status: a reader that sees the
        # status (the SDK's wait()) reads the streams once more and stops
        self.logs.finish(job.name)
        with self._lock:
            job.end_time = job.last_modified = _now()
            if job.start_time is None:
                job.start_time = job.end_time
            if outcome is not None:
                job.knobs = dict(outcome.get("knobs") or {})
            if outcome is not None and outcome.get("status") == TransformJobStatus.COMPLETED.value:
                job.status = TransformJobStatus.COMPLETED.value
            elif job.stop_requested:
                job.status = TransformJobStatus.STOPPED.value
            else:
                job.status = TransformJobStatus.FAILED.value
                job.failure_reason = str((outcome or {}).get("failure_reason")
                                         or "AlgorithmError: the job's worker process exited unexpectedly")[:1024]
        stats = (outcome or {}).get("stats") or {}
        _log.info("transform job %s %s%s", job.name, job.status,
                  f": {stats.get('records', 0)} records in {stats.get('seconds', 0):.1f} s" if stats else "")

    def _job(self, name: Any) -> TransformJob:
        with self._lock:
            job = self.jobs.get(str(name))
        if job is None:
            raise validation(f"Could not find requested job with name {name}")
        return job

    def describe_transform_job(self, body: dict[str, Any]) -> dict[str, Any]:
        job = self._job(body.get("TransformJobName"))
        with self._lock:
            return job.describe()

    def stop_transform_job(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body.get("TransformJobName")
        with self._lock:
            job = self.jobs.get(str(name))
            if job is None:
                raise resource_not_found(f"Could not find requested job with name {name}")
            if TransformJobStatus(job.status).terminal:
                raise validation(f"Transform job {name} is {job.status} and cannot be stopped")
            if job.status == TransformJobStatus.STOPPING.value:
                return {}
            job.status, job.stop_requested, job.last_modified = TransformJobStatus.STOPPING.value, True, _now()
            runner = job.runner
        _log.info("stopping transform job %s", name)
        if runner is not None:
            runner.stop()
        return {}

    def list_transform_jobs(self, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            jobs = list(self.jobs.values())
        contains = body.get("NameContains")
        status = body.get("StatusEquals")
        if status is not None and status not in STATUSES:
            raise validation(f"StatusEquals must be one of {', '.join(STATUSES)}, got {status!r}")
        bounds = {key: _time(body[key], key) for key in ("CreationTimeAfter", "CreationTimeBefore",
                                                          "LastModifiedTimeAfter", "LastModifiedTimeBefore")
                  if body.get(key) is not None}
        selected = [
            job for job in jobs
            if (not contains or str(contains).lower() in job.name.lower())
            and (status is None or job.status == status)
            and ("CreationTimeAfter" not in bounds or job.creation_time > bounds["CreationTimeAfter"])
            and ("CreationTimeBefore" not in bounds or job.creation_time < bounds["CreationTimeBefore"])
            and ("LastModifiedTimeAfter" not in bounds or job.last_modified > bounds["LastModifiedTimeAfter"])
            and ("LastModifiedTimeBefore" not in bounds or job.last_modified < bounds["LastModifiedTimeBefore"])
        ]
        sort_by = body.get("SortBy", "CreationTime")
        keys: dict[str, Callable[[TransformJob], Any]] = {
            "Name": lambda j: j.name, "CreationTime": lambda j: j.creation_time, "Status": lambda j: j.status}
        if sort_by not in keys:
            raise validation(f"SortBy must be one of Name, CreationTime, Status, got {sort_by!r}")
        order = body.get("SortOrder", "Descending")
        if order not in ("Ascending", "Descending"):
            raise validation(f"SortOrder must be Ascending or Descending, got {order!r}")
        selected.sort(key=keys[sort_by], reverse=order == "Descending")
        try:
            start = int(body.get("NextToken") or 0)
            size = int(body.get("MaxResults") or 10)
        except ValueError:
            raise validation("NextToken is not a token this service issued") from None
        if not 1 <= size <= 100:
            raise validation(f"MaxResults must be from 1 to 100, got {size}")
        with self._lock:
            page = [job.summary() for job in selected[start:start + size]]
        out: dict[str, Any] = {"TransformJobSummaries": page}
        if start + size < len(selected):
            out["NextToken"] = str(start + size)
        return out

    # -- lifecycle ------------------------------------------------------------------------------------------

    def shutdown(self, timeout: float = 30.0) -> None:
        """Stop every running job and wait (up to ``timeout``) until their processes are gone."""
        with self._lock:
            self._closed = True
            running = [job for job in self.jobs.values() if not TransformJobStatus(job.status).terminal]
        for job in running:
            if job.status == "InProgress":
                self.stop_transform_job({"TransformJobName": job.name})
        for job in running:
            if job.runner is not None and not job.runner.wait(timeout):
                _log.warning("transform job %s: its worker did not exit in time", job.name)
