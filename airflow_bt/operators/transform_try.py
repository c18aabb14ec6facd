"""One try of the transform step: its rendered settings, its backend, its run's jobs, and its results.

:class:`TransformTry` is what :class:`~airflow_bt.operators.transform.BatchTransformOperator` works
with inside ``execute``: every templated value converted once (a bad one fails the task before
anything runs), the backend chosen from :data:`BACKENDS` (no per-backend branches in the flow), the
job name, model and prediction settings fixed, and one constructor per outcome of
:class:`~airflow_bt.operators.results.TransformResult`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from airflow_bt.compat import AirflowFailException, Context, try_number
from airflow_bt.operators.results import ShardOutput, TransformResult
from airflow_bt.operators.templated import as_bool, as_number, required_int, required_number
from airflow_bt.steps.layout import RunLayout
from airflow_bt.steps.naming import run_job_name
from airflow_bt.storage.uris import as_prefix, join_uri
from airflow_bt.transform.attempts import (
    JobChoice,
    RetryPlan,
    choose_job,
    describe_run_jobs,
    earlier_outputs,
    output_prefix,
    plan_partial_retry,
    prediction_settings,
)
from airflow_bt.transform.backends.base import TransformBackend
from airflow_bt.transform.fingerprint import versioned_model_name
from airflow_bt.transform.request import (
    build_model_request,
    build_transform_request,
    data_capture,
    model_client_config,
)


def _local_backend(op: Any, layout: RunLayout) -> TransformBackend:
    from airflow_bt.transform.backends.local_jobs import LocalBackend
    from airflow_bt.transform.secrets import masked_secrets

    def describe_package(name: str) -> dict[str, Any]:  # only a model from a Model Registry package needs it
        return dict(op.transform_hook.sagemaker.get_conn().describe_model_package(ModelPackageName=name))

    return LocalBackend(op.hook.storage(layout.run_prefix), join_uri(layout.run_prefix, "transform"),
                        aws_conn_id=op.aws_conn_id, log=op.log, mask=masked_secrets,
                        describe_package=describe_package,
                        dead_letter=as_bool("dead_letter", op.dead_letter),
                        dead_letter_max_records=required_int("dead_letter_max_records", op.dead_letter_max_records))


def _sagemaker_backend(op: Any, layout: RunLayout) -> TransformBackend:
    from airflow_bt.transform.backends.sagemaker import SageMakerBackend

    return SageMakerBackend(op.transform_hook, op.log)


#: backend name -> how the operator builds it for a run.
BACKENDS: dict[str, Callable[[Any, RunLayout], TransformBackend]] = {
    "local": _local_backend, "sagemaker": _sagemaker_backend,
}


@dataclass
class TransformTry:
    """The state of one try: built by :meth:`start` from the operator and the task's context."""

    op: Any
    backend: TransformBackend
    shards: ShardOutput
    summary: dict[str, Any]
    layout: RunLayout
    attempt: int
    base: str
    model_name: str
    model_request: dict[str, Any] | None
    settings: dict[str, Any]
    instance_count: int
    check_interval: float
    timeout: float | None
    deadline: float | None
    price: float | None
    reused_shards: int = 0
    output_uri: str | None = None

    @classmethod
    def start(cls, op: Any, context: Context) -> TransformTry:
        if op.backend not in BACKENDS:
            raise AirflowFailException(f"backend must be one of {tuple(BACKENDS)}, got {op.backend!r}")
        shards = ShardOutput.from_xcom(op.shards)
        summary = op.read_shard_summary(op.shards)
        layout = RunLayout(work_root=shards.work_uri, output_root="", slug=shards.run_slug)
        backend = BACKENDS[op.backend](op, layout)
        instance_count = required_int("instance_count", op.instance_count, minimum=1)
        shard_count = len(summary["shards"])
        if 0 < shard_count < instance_count:
            op.log.info("instance count capped from %d to %d: there are %d shard(s) and one shard never "
                        "spans instances", instance_count, shard_count, shard_count)
            instance_count = shard_count
        timeout = as_number("max_ingestion_time", op.max_ingestion_time, minimum=1)
        if timeout is None and op.execution_timeout is not None:
            timeout = op.execution_timeout.total_seconds()
        model_name, model_request = str(op.model_name), None
        if backend.needs_model_request or as_bool("create_model", op.create_model):
            model_request = _model_request(op)
            model_name = model_request["ModelName"] = versioned_model_name(
                str(model_request["ModelName"]), model_request, _artifact_etag(op, model_request))
        run = cls(op=op, backend=backend, shards=shards, summary=summary, layout=layout,
                  attempt=try_number(context), base=run_job_name(op.job_name_prefix or op.model_name,
                                                                 str(context["ds"]), layout.slug),
                  model_name=model_name, model_request=model_request, settings={}, instance_count=instance_count,
                  check_interval=required_number("check_interval", op.check_interval, minimum=0.01),
                  timeout=timeout, deadline=time.time() + timeout if timeout else None,
                  price=as_number("price_per_instance_hour", op.price_per_instance_hour))
        run.settings = prediction_settings(run.request(run.base, layout.run_prefix, instance_count))
        return run

    # -- the job ----------------------------------------------------------------------------------------

    @property
    def shard_count(self) -> int:
        return len(self.summary["shards"])

    def job_output(self, job_name: str) -> str:
        return as_prefix(join_uri(self.layout.run_prefix, "transform", job_name))

    def output_of(self, job_name: str, description: dict[str, Any] | None) -> str:
        return output_prefix(description, self.job_output(job_name))

    def request(self, job_name: str, output_uri: str, instance_count: int, input_uri: str | None = None
                ) -> dict[str, Any]:
        op = self.op
        try:
            return build_transform_request(
                job_name=job_name, model_name=self.model_name, input_uri=input_uri or self.summary["manifest_uri"],
                output_uri=output_uri, content_type=op.content_type or self.summary["content_type"],
                accept=op.accept, assemble_with=op.assemble_with, instance_type=op.instance_type,
                instance_count=instance_count, batch_strategy=op.batch_strategy, max_payload_mb=op.max_payload_mb,
                max_concurrent_transforms=op.max_concurrent_transforms, environment=op.environment,
                data_processing=_data_processing(op), model_client_config=model_client_config(op.model_client_config),
                tags=op.tags, output_kms_key_id=op.kms_key_id or None, volume_kms_key_id=op.volume_kms_key_id or None,
                data_capture_config=data_capture(op.data_capture))
        except ValueError as exc:
            raise AirflowFailException(str(exc)) from exc

    def choose_job(self) -> tuple[JobChoice, list[str]]:
        """The job to work with, and the outputs of the run's earlier jobs that a partial retry reuses."""
        jobs = describe_run_jobs(self.backend, self.base, self.attempt)
        choice = choose_job(self.backend, jobs, self.base, self.attempt, self.op.log, model_name=self.model_name,
                            settings=self.settings)
        return choice, earlier_outputs(jobs, model_name=self.model_name, settings=self.settings, exclude=choice.name)

    def plan_partial_retry(self, job_name: str, earlier: list[str]) -> RetryPlan:
        store = self.op.hook.storage(self.layout.run_prefix)
        return plan_partial_retry(store, self.summary, earlier,
                                  join_uri(self.layout.run_prefix, "transform", f"{job_name}.manifest"), self.op.log)

    def create_job(self, job_name: str, plan: RetryPlan) -> dict[str, Any] | None:
        """Create the model (if this try builds it) and the job over the shards ``plan`` leaves."""
        from airflow_bt.transform.spec import TransformSpecError, validate_model_request, validate_transform_request

        self.reused_shards = len(plan.reused)
        instance_count = min(self.instance_count, self.shard_count - len(plan.reused))
        request = self.request(job_name, self.job_output(job_name), instance_count, plan.input_uri)
        try:
            validate_transform_request(request)
        except TransformSpecError as exc:
            raise AirflowFailException(f"invalid transform request: {exc}") from exc
        if self.model_request is not None:
            try:
                validate_model_request(self.model_request)
                self.backend.ensure_model(self.model_request)
            except TransformSpecError as exc:  # e.g. a model package that does not exist: a retry cannot help
                raise AirflowFailException(f"invalid model request: {exc}") from exc
        self.op.log.info("transform job %s: %d of %d shard(s), %d record(s), %d instance(s) of %s, model %s, "
                         "backend %s", job_name, self.shard_count - len(plan.reused), self.shard_count,
                         self.summary["records"], instance_count, self.op.instance_type, self.model_name,
                         self.backend.name)
        return self.backend.create_job(request)

    def prediction_prefixes_of(self, job_name: str, description: dict[str, Any]) -> list[str]:
        """This job's output, then the earlier jobs' that a partial retry reuses (when not handed over)."""
        jobs = describe_run_jobs(self.backend, self.base, self.attempt)
        earlier = earlier_outputs(jobs, model_name=self.model_name, settings=self.settings, exclude=job_name)
        return [self.output_of(job_name, description), *earlier]

    def explain_failure(self, description: dict[str, Any]) -> str:
        from airflow_bt.steps.shard import shard_origins

        status = description["TransformJobStatus"]
        default = "stopped before it finished (StopTransformJob, a timeout or a kill)" if status == "Stopped" \
            else "no reason given"
        reason = str(description.get("FailureReason") or default)
        where = [f"{key} holds {origin}" for key, origin in shard_origins(self.summary).items() if key in reason]
        return (f"transform job {description.get('TransformJobName')} ended {status}: {reason}"
                + (f" ({'; '.join(where)})" if where else ""))

    @property
    def lineage(self) -> tuple[str | None, str | None]:
        return self.summary.get("shard_prefix") or self.summary.get("manifest_uri"), self.output_uri

    def _shards_reused_by(self, description: dict[str, Any]) -> int:
        """How many shards the job left to earlier jobs: those not in its input manifest (a partial retry's)."""
        source = (((description.get("TransformInput") or {}).get("DataSource") or {}).get("S3DataSource")
                  or {}).get("S3Uri")
        if not source or source == self.summary["manifest_uri"] or not source.startswith(self.layout.run_prefix):
            return 0  # the whole manifest, or not a manifest this run wrote
        scored = _manifest_entries(self.op.hook.storage(source), source)
        return self.reused_shards if scored is None else max(0, self.shard_count - scored)

    # -- results ----------------------------------------------------------------------------------------

    def _result(self, status: str, output_uri: str, prefixes: list[str], **fields: Any) -> TransformResult:
        self.output_uri = output_uri
        return TransformResult(status=status, backend=self.backend.name, output_uri=output_uri,
                               prediction_prefixes=list(dict.fromkeys(prefixes)),
                               records=int(fields.pop("records", self.summary["records"])),
                               shards_summary_uri=self.shards.summary_uri, **fields)

    def skipped(self) -> TransformResult:
        return self._result("Skipped", self.job_output(self.base), [self.job_output(self.base)], records=0)

    def reused(self, job_name: str, plan: RetryPlan) -> TransformResult:
        output = self.job_output(job_name)
        return self._result("Reused", output, [output, *plan.reused.values()], reused_shards=len(plan.reused),
                            model_name=self.model_name)

    def handed_over(self, job_name: str, prefixes: list[str]) -> TransformResult:
        return self._result("InProgress", prefixes[0], prefixes, job_name=job_name, model_name=self.model_name,
                            instance_count=self.instance_count)

    def completed(self, description: dict[str, Any], prefixes: list[str]) -> TransformResult:
        from airflow_bt.transform.billing import billing

        bill = billing(description, self.price)
        stats = description.get("LocalEngineStats") or {}
        name = description["TransformJobName"]
        prefixes = [self.output_of(name, description), *prefixes[1:]]  # where the job says it wrote
        self.op.log.info("transform job %s %s: %.2f s on %d instance(s) = %.3f billable instance-seconds%s", name,
                         description["TransformJobStatus"], bill.seconds, bill.instance_count,
                         bill.billable_instance_seconds, bill.describe_cost())
        if stats:
            self.op.log.info("transform job %s: %s records (%.0f records/s)", name, stats.get("records", "?"),
                             stats.get("records_per_second", 0.0))
        return self._result(
            str(description["TransformJobStatus"]), prefixes[0], prefixes, job_name=name,
            job_arn=description.get("TransformJobArn"), model_name=description.get("ModelName"),
            records=stats.get("records", self.summary["records"]), rejected=int(stats.get("rejected", 0)),
            instance_count=bill.instance_count, reused_shards=self._shards_reused_by(description),
            started_at=bill.started_at, ended_at=bill.ended_at,
            billable_instance_seconds=bill.billable_instance_seconds,
            price_per_instance_hour=bill.price_per_instance_hour, cost=bill.cost)


def _model_request(op: Any) -> dict[str, Any]:
    """The ``CreateModel`` request: ``model_config`` as given, else built from the operator's model settings."""
    if op.model_config:
        return dict(op.model_config)
    try:
        package = op.model_package_name or None
        return build_model_request(
            model_name=op.model_name, model_data_url=op.model_data_url, image=None if package else op.image,
            model_package_name=package,
            environment=op.model_environment, execution_role_arn=op.execution_role_arn or None, tags=op.tags,
            vpc=op.vpc_config, enable_network_isolation=as_bool("enable_network_isolation",
                                                                 op.enable_network_isolation))
    except ValueError as exc:
        raise AirflowFailException(str(exc)) from exc


def _data_processing(op: Any) -> dict[str, str] | None:
    """``DataProcessing`` from ``input_filter``/``output_filter`` (publish joins the input itself: no JoinSource)."""
    processing = {key: str(value) for key, value in (("InputFilter", op.input_filter),
                                                     ("OutputFilter", op.output_filter)) if value}
    return processing or None


def _manifest_entries(store: Any, uri: str) -> int | None:
    import json

    try:
        return len(json.loads(store.read_bytes(uri))) - 1  # the first entry is the common prefix
    except Exception:  # no manifest to read (another layout, no access): unknown
        return None


def _artifact_etag(op: Any, model_request: dict[str, Any]) -> str | None:
    """The ETag (size-mtime for files) of the model's artifact: a ``model.tar.gz`` replaced at the same URL is
    another model."""
    url = model_request.get("PrimaryContainer", {}).get("ModelDataUrl")
    if not url:
        return None
    try:
        return str(op.hook.storage(url).stat(url).etag)
    except Exception:  # no artifact to stat (a folder, a running container): the request alone
        return None
