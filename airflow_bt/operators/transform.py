"""Run one Batch Transform job over the shards, on the local engine or SageMaker: one flow for both."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.configuration import conf

from airflow_bt.compat import AirflowException, Context, mask_sensitive_values
from airflow_bt.faults import failpoint
from airflow_bt.hooks.transform_job import AwsTransformJobParams
from airflow_bt.links.sagemaker import TransformJobLink, TransformJobLogsLink
from airflow_bt.operators.base import BatchStepOperator
from airflow_bt.operators.templated import as_bool
from airflow_bt.operators.transform_try import TransformTry
from airflow_bt.transform.status import TransformJobStatus

#: How many of a failed job's last log lines its task log ends with.
LOG_TAIL_LINES = 50
DEFAULT_IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"


class BatchTransformOperator(AwsTransformJobParams, BatchStepOperator):
    """Build one ``CreateTransformJob`` request over the shard manifest and run it to its end.

    ``backend="local"`` runs it on the local engine in the task's process; ``backend="sagemaker"`` on
    SageMaker (Amazon SageMaker, or ``airflow-bt local-sagemaker`` when the connection points there).
    Both follow one flow and one set of rules:

    - the run's job is ``bt-<model>-<day>-<run token>`` and writes ``<run prefix>/transform/<job>/``; a
      retry attaches to that job while it runs (and reuses it once ``Completed``) if it predicts what
      the retry would; after ``Failed``/``Stopped`` the retry starts ``<name>-r<try>`` over only the
      shards the earlier jobs left without complete predictions (a partial retry);
    - "predicts the same" is the model's name — ``<model_name>-<hash of the CreateModel request and
      the artifact's ETag>`` when the model is created from its config (always locally) — and the
      job's ``Environment``, filters, content types and batch strategy;
    - ``Stopped`` is a failure; ``on_kill``, the operator's timeout and ``max_ingestion_time`` stop the job;
    - a job that did not complete: the task log ends with the job's last log lines (CloudWatch Logs
      ``/aws/sagemaker/TransformJobs`` through ``aws_conn_id`` on SageMaker; the engine's log and its model's
      output locally), or a line saying why there are none;
    - on SageMaker, ``deferrable=True`` waits on the triggerer and ``wait_for_completion=False`` hands the
      job to a :class:`~airflow_bt.sensors.transform_job.TransformJobSensor`; a local job lives in the
      task's process, so the task waits for it.

    The instance count is capped at the shards left (one shard never spans instances). Returns a
    :class:`~airflow_bt.operators.results.TransformResult` (XCom: a small dict; ``prediction_prefixes``
    tells publish where each shard's predictions are; billable instance-seconds and cost).

    :param shards: the shard task's return value (``shard_task.output``).
    :param model_name: the SageMaker model name (with ``create_model``: the stem of the created model's name).
    :param model_data_url: the ``model.tar.gz`` (or folder) with ``code/inference.py``.
    :param image: the inference image URI of the model's container.
    :param model_environment: environment of the model's container.
    :param backend: ``local`` (the in-process engine) or ``sagemaker``.
    :param instance_type: SageMaker instance type.
    :param instance_count: instances; each processes whole shards.
    :param batch_strategy: ``MultiRecord`` or ``SingleRecord``.
    :param max_payload_mb: the request payload limit in MB (0-100).
    :param max_concurrent_transforms: requests in flight per instance (unset: the container's choice).
    :param content_type: MIME type of the records (default: the shard step's format).
    :param accept: MIME type of the predictions.
    :param assemble_with: ``Line`` or ``None``.
    :param environment: the transform job's ``Environment``.
    :param job_name_prefix: the model part of the job name (default: ``model_name``).
    :param aws_conn_id: the AWS connection for ``s3://`` URIs and SageMaker.
    :param region_name: AWS region of SageMaker (default: the connection's).
    :param verify: whether to verify SSL certificates of the SageMaker endpoint.
    :param botocore_config: botocore client configuration for SageMaker.
    :param wait_for_completion: ``False`` returns once the job is created or found (sagemaker).
    :param deferrable: wait on the triggerer instead of in a worker slot (sagemaker; default
        ``[operators] default_deferrable``).
    :param check_interval: seconds between two status checks (sagemaker).
    :param max_ingestion_time: seconds the job may run before it is stopped and the task fails
        (default: the task's ``execution_timeout``, else no limit).
    :param create_model: create the model from ``model_config`` (or ``model_data_url``, ``image``,
        ``model_environment``, ``execution_role_arn``) before the job (always on the local backend).
    :param model_config: a full ``CreateModel`` request to create (its ``ModelName`` is the stem).
    :param execution_role_arn: the IAM role SageMaker assumes for the created model.
    :param price_per_instance_hour: the instance type's price; the cost is logged and recorded.
    :param dead_letter: (backend local) bisect a failed mini-batch to find the records the model rejects,
        write them with the model's message to ``errors/<shard>.jsonl`` beside the predictions, score the rest.
    :param dead_letter_max_records: more rejected records than this fail the job.
    :param input_filter: ``DataProcessing.InputFilter`` (JSONPath): the part of each record the model sees,
        e.g. ``$[1:]`` to keep an ID column from it; publish still joins the full input row.
    :param output_filter: ``DataProcessing.OutputFilter`` (JSONPath): the part of each prediction kept.
    :param model_client_config: ``{invocations_timeout_seconds, max_retries}`` per request (``ModelClientConfig``).
    :param tags: cost-allocation tags of the job and of the created model.
    :param kms_key_id: the KMS key that encrypts the job's output; ``volume_kms_key_id``: its instances' volumes.
    :param vpc_config: ``{security_group_ids, subnets}`` of the created model (``VpcConfig``).
    :param enable_network_isolation: the created model's container gets no network access.
    :param data_capture: ``{destination_s3_uri, kms_key_id}``: capture the job's input and output
        (``DataCaptureConfig``; the local engine writes manifests of both, as SageMaker does).
    :param model_package_name: create the model from this SageMaker Model Registry package (a name or a
        versioned package ARN) instead of ``image`` + ``model_data_url``; the local backend resolves it
        with ``DescribeModelPackage`` through ``aws_conn_id``.
    """

    template_fields: Sequence[str] = (
        "shards", "model_name", "model_data_url", "image", "model_environment", "backend", "instance_type",
        "instance_count", "batch_strategy", "max_payload_mb", "max_concurrent_transforms", "content_type",
        "accept", "assemble_with", "environment", "job_name_prefix", *AwsTransformJobParams.aws_template_fields,
        "check_interval", "max_ingestion_time", "create_model", "model_config", "execution_role_arn",
        "price_per_instance_hour", "dead_letter", "dead_letter_max_records", "input_filter", "output_filter",
        "model_client_config", "tags", "kms_key_id", "volume_kms_key_id", "vpc_config", "enable_network_isolation",
        "data_capture", "model_package_name",
    )
    template_fields_renderers = {"environment": "json", "model_environment": "json", "model_config": "json"}
    ui_color = "#fdf2e8"
    operator_extra_links = (TransformJobLink(), TransformJobLogsLink())

    def __init__(
        self, *, shards: Any, model_name: str, model_data_url: str | None = None, image: str = DEFAULT_IMAGE,
        model_environment: dict[str, str] | None = None, backend: str = "local",
        instance_type: str = "ml.m5.xlarge", instance_count: int | str = 1, batch_strategy: str = "MultiRecord",
        max_payload_mb: int | str = 6, max_concurrent_transforms: int | str | None = None,
        content_type: str | None = None, accept: str = "text/csv", assemble_with: str = "Line",
        environment: dict[str, str] | None = None, job_name_prefix: str | None = None,
        region_name: str | None = None, verify: bool | str | None = None,
        botocore_config: dict[str, Any] | None = None, wait_for_completion: bool | str = True,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        check_interval: int | float | str = 30, max_ingestion_time: int | float | str | None = None,
        create_model: bool | str = False, model_config: dict[str, Any] | None = None,
        execution_role_arn: str | None = None, price_per_instance_hour: float | str | None = None,
        dead_letter: bool | str = False, dead_letter_max_records: int | str = 100, input_filter: str | None = None,
        output_filter: str | None = None, model_client_config: dict[str, Any] | None = None,
        tags: dict[str, str] | None = None, kms_key_id: str | None = None, volume_kms_key_id: str | None = None,
        vpc_config: dict[str, Any] | None = None, enable_network_isolation: bool | str = False,
        data_capture: dict[str, Any] | None = None, model_package_name: str | None = None, **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.set_aws_params(self.aws_conn_id, region_name, verify, botocore_config)
        self.shards, self.model_name, self.model_data_url, self.image = shards, model_name, model_data_url, image
        self.model_environment = model_environment or {}
        self.backend, self.instance_type, self.instance_count = backend, instance_type, instance_count
        self.batch_strategy, self.max_payload_mb = batch_strategy, max_payload_mb
        self.max_concurrent_transforms, self.content_type = max_concurrent_transforms, content_type
        self.accept, self.assemble_with, self.environment = accept, assemble_with, environment or {}
        self.job_name_prefix, self.wait_for_completion = job_name_prefix, wait_for_completion
        self.deferrable = deferrable
        self.check_interval, self.max_ingestion_time = check_interval, max_ingestion_time
        self.create_model, self.model_config, self.execution_role_arn = create_model, model_config, execution_role_arn
        self.price_per_instance_hour = price_per_instance_hour
        self.dead_letter, self.dead_letter_max_records = dead_letter, dead_letter_max_records
        self.input_filter, self.output_filter = input_filter, output_filter
        self.model_client_config = model_client_config
        self.tags, self.kms_key_id, self.volume_kms_key_id = tags or {}, kms_key_id, volume_kms_key_id
        self.vpc_config, self.enable_network_isolation = vpc_config, enable_network_isolation
        self.data_capture, self.model_package_name = data_capture, model_package_name
        self._try: TransformTry | None = None
        self._job_name: str | None = None
        self._job_done = False

    def execute(self, context: Context) -> dict[str, Any]:
        # values of sensitive-named variables (API_TOKEN, DB_PASSWORD, ...) never show in the task log
        mask_sensitive_values(self.environment)
        mask_sensitive_values(self.model_environment)
        run = self._try = TransformTry.start(self, context)
        if run.shard_count == 0:
            self.log.info("the partition has no records: no transform job is started (nothing to pay for)")
            return run.skipped().to_xcom()
        choice, earlier = run.choose_job()
        description = choice.existing
        if description is None:
            plan = run.plan_partial_retry(choice.name, earlier)
            if plan.all_reused(run.shard_count):
                self.log.info("every shard's predictions exist from earlier jobs of this run: no job is started")
                return run.reused(choice.name, plan).to_xcom()
            self._job_name = choice.name
            description = run.create_job(choice.name, plan)
        self._job_name = choice.name
        self._persist_link(context, choice.name)
        failpoint("transform.after_create", run.layout.run_prefix)
        prefixes = [run.output_of(choice.name, description), *earlier]
        if description is None or not TransformJobStatus.of(description).terminal:
            if run.backend.can_defer and not as_bool("wait_for_completion", self.wait_for_completion):
                self.log.info("not waiting for transform job %s (wait_for_completion=False)", choice.name)
                self._job_done = True  # on_kill must not stop a job this task hands over
                return run.handed_over(choice.name, prefixes).to_xcom()
            if run.backend.can_defer and as_bool("deferrable", self.deferrable):
                self._defer(run, choice.name, prefixes)
            description = self._wait(run, choice.name)
        return self._finish(run, description, prefixes)

    def _persist_link(self, context: Context, job_name: str) -> None:
        link = self._try.backend.console_link() if self._try else None
        if link is None or not self.do_xcom_push:
            return
        try:
            for kind in (TransformJobLink, TransformJobLogsLink):
                kind.persist(context, job_name=job_name, **link)
        except Exception:  # the links are a convenience: never fail the task over them
            self.log.warning("could not store the console links of %s", job_name, exc_info=True)

    def _defer(self, run: TransformTry, job_name: str, prefixes: list[str]) -> None:
        timeout = run.timeout
        self.log.info("deferring: the triggerer polls transform job %s every %g s%s", job_name, run.check_interval,
                      f" for at most {timeout:g} s" if timeout else " until it ends")
        # The trigger fires "timeout" at the deadline, so the job is stopped; Airflow's own timeout is a backstop.
        backstop = timedelta(seconds=timeout + 2 * run.check_interval + 60) if timeout else None
        self.defer(trigger=run.backend.trigger(job_name, poll_interval=run.check_interval, deadline=run.deadline),
                   method_name="execute_complete", kwargs={"prediction_prefixes": prefixes}, timeout=backstop)

    def _wait(self, run: TransformTry, job_name: str) -> dict[str, Any]:
        from airflow_bt.transform.status import JobWaitTimeout

        try:
            description = run.backend.wait(job_name, check_interval=run.check_interval, deadline=run.deadline)
        except JobWaitTimeout as exc:
            self._stop(job_name)
            raise AirflowException(f"{exc}; max_ingestion_time/execution_timeout reached: the job was stopped") \
                from None
        except Exception:  # e.g. the API failed: the job is fine, and the task's retry attaches to it
            self.log.warning("lost track of transform job %s; it keeps running and a retry attaches to it", job_name)
            raise
        except BaseException:  # the task's timeout, a kill, an interrupt: do not leave a job running (and billing)
            self._stop(job_name)
            raise
        self._job_done = True
        return description

    def _stop(self, job_name: str) -> None:
        if self._job_done or self._try is None:
            return
        self._job_done = True
        try:
            self._try.backend.stop(job_name)
        except Exception:
            self.log.exception("could not stop transform job %s", job_name)

    def _finish(self, run: TransformTry, description: dict[str, Any], prefixes: list[str]) -> dict[str, Any]:
        self._job_done = True
        if TransformJobStatus.of(description) is not TransformJobStatus.COMPLETED:
            explanation = run.explain_failure(description)
            if self._log_tail(run, str(description.get("TransformJobName") or self._job_name)):
                explanation += " (the job's last log lines are above)"
            raise AirflowException(explanation)
        failpoint("transform.before_return", run.layout.run_prefix)
        return run.completed(description, prefixes).to_xcom()

    def _log_tail(self, run: TransformTry, job_name: str) -> bool:
        """Log the job's last :data:`LOG_TAIL_LINES` log lines (or why there are none); whether there were any."""
        try:
            tail = run.backend.log_tail(job_name, LOG_TAIL_LINES)
        except Exception as exc:  # the task fails with the job's reason either way
            self.log.warning("could not read the logs of transform job %s: %s: %s", job_name, type(exc).__name__, exc)
            return False
        if not tail.lines:
            self.log.warning("no log lines of transform job %s: %s", job_name, tail.note)
            return False
        self.log.error("the last %d log lines of transform job %s (%s):", len(tail.lines), job_name, tail.source)
        for line in tail.lines:
            self.log.error("  | %s", line)
        return True

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None,
                         prediction_prefixes: list[str] | None = None) -> dict[str, Any]:
        """Resume after the trigger fired: check the event's status, never assume success."""
        if not isinstance(event, dict) or "status" not in event or "job_name" not in event:
            raise AirflowException(f"transform trigger sent an unexpected event: {event!r}")
        job_name = self._job_name = str(event["job_name"])
        run = self._try = TransformTry.start(self, context)
        if event["status"] == "timeout":
            self._stop(job_name)
            raise AirflowException(f"{event.get('message')}; max_ingestion_time/execution_timeout reached: "
                                   "the job was stopped")
        if event["status"] == "error":
            raise AirflowException(f"waiting for transform job {job_name} failed: {event.get('message')}")
        description = run.backend.describe(job_name)
        if description is None:
            raise AirflowException(f"transform job {job_name} no longer exists")
        if not TransformJobStatus.of(description).terminal:  # an event status the job no longer agrees with
            raise AirflowException(f"trigger reported {event['status']} but transform job {job_name} is "
                                   f"{description['TransformJobStatus']}")
        return self._finish(run, description, prediction_prefixes or run.prediction_prefixes_of(job_name, description))

    def on_kill(self) -> None:
        """The task is being killed (SIGTERM, a timeout, marked failed): stop the job it runs."""
        if self._job_name and not self._job_done:
            self.log.warning("task killed: stopping transform job %s", self._job_name)
            self._stop(self._job_name)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage: the shards the job read and the predictions it wrote (if OpenLineage is installed)."""
        from airflow_bt.operators.lineage import operator_lineage

        return operator_lineage(*(self._try.lineage if self._try else (None, None)))
