"""Run one Batch Transform job over the shards, on the local engine or SageMaker."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import timedelta
from functools import cached_property
from typing import Any

from airflow.configuration import conf

from airflow_bt.compat import AirflowException, AirflowFailException, Context, mask_sensitive_values, try_number
from airflow_bt.faults import failpoint
from airflow_bt.links.sagemaker import TransformJobLink
from airflow_bt.operators.base import BatchStepOperator
from airflow_bt.steps.layout import RunLayout
from airflow_bt.steps.naming import run_job_name, transform_job_name
from airflow_bt.steps.shard import shard_origins
from airflow_bt.storage.uris import as_prefix, join_uri
from airflow_bt.transform.fingerprint import job_settings, model_fingerprint, prediction_fingerprint
from airflow_bt.transform.request import build_model_request, build_transform_request

BACKENDS = ("local", "sagemaker")
DEFAULT_IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"


def _bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off", "none", ""):
        return False
    raise AirflowFailException(f"{name} must be true or false, got {value!r}")


def _number(name: str, value: Any, *, minimum: float = 0.0) -> float | None:
    """A templated number (Jinja renders ``30`` as ``"30"``) back as a float; ``None``/``""`` stay unset."""
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise AirflowFailException(f"{name} must be a number, got {value!r}") from None
    if number < minimum:
        raise AirflowFailException(f"{name} must be at least {minimum:g}, got {value!r}")
    return number


class BatchTransformOperator(BatchStepOperator):
    """Build one ``CreateTransformJob`` request over the shard manifest and run it.

    ``backend="local"`` runs the request on the local engine in the task's process; output goes to
    ``<run prefix>/transform-<try>/`` and the job name is unique per attempt.

    ``backend="sagemaker"`` runs it on SageMaker through the amazon provider's ``SageMakerHook``
    (Amazon SageMaker, or ``airflow-bt local-sagemaker`` when the connection points there):

    - the job name comes from the run, not the try (``bt-churn-20260624-3fa9c1``), and its output
      goes to ``<run prefix>/transform/<job name>/``; a retry after a worker crash finds the job
      its earlier try launched and waits for it (``InProgress``) or reuses it (``Completed``); only
      after ``Failed``/``Stopped`` does it start ``<name>-r<try>``;
    - ``Stopped`` is a failure; ``on_kill``, the operator's timeout and ``max_ingestion_time`` stop the job;
    - ``deferrable=True`` waits on the triggerer (:class:`~airflow_bt.triggers.transform_job.TransformJobTrigger`),
      whose polling budget is the timeout given here;
    - ``create_model=True`` creates the model from its config, named ``<model_name>-<hash of the
      config>`` so a retry, or the next run with the same artifact, reuses it.

    The instance count is capped at the number of shards (one object never spans instances). The
    return value (XCom) is small: job name, ARN, status, output URI, instance count, records, start
    and end, billable instance-seconds and, given ``price_per_instance_hour``, the cost; the publish
    step records it in the publication's ``_manifest.json``.

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
    :param wait_for_completion: wait until the job ends (sagemaker); ``False`` returns once it is
        created or found, e.g. to wait with a :class:`~airflow_bt.sensors.transform_job.TransformJobSensor`.
    :param deferrable: wait on the triggerer instead of in a worker slot (sagemaker; default
        ``[operators] default_deferrable``).
    :param check_interval: seconds between two status checks (sagemaker).
    :param max_ingestion_time: seconds the job may run before it is stopped and the task fails
        (sagemaker; default: the task's ``execution_timeout``, else no limit).
    :param create_model: create the model from ``model_config`` (or ``model_data_url``, ``image``,
        ``model_environment``, ``execution_role_arn``) before the job (sagemaker).
    :param model_config: a full ``CreateModel`` request to create (its ``ModelName`` is the stem).
    :param execution_role_arn: the IAM role SageMaker assumes for the created model.
    :param price_per_instance_hour: the instance type's price; the cost is logged and recorded.
    :param dead_letter: (backend local) when a mini-batch fails, bisect it to find the records the model
        rejects, write them with the model's message to ``errors/<shard>.jsonl`` beside the predictions,
        and score the rest; the publish step copies them to the attempt's ``errors/``.
    :param dead_letter_max_records: more rejected records than this fail the job (the model, not the
        data, is then likely broken).

    A retry of this task re-processes only the shards that no earlier try of the same run finished
    with the same model (their complete ``.out`` objects are reused); on SageMaker the new job gets a
    manifest of just those shards. The return value's ``prediction_prefixes`` lists where the publish
    step finds each shard's predictions.
    """

    template_fields: Sequence[str] = (
        "shards", "model_name", "model_data_url", "image", "model_environment", "backend", "instance_type",
        "instance_count", "batch_strategy", "max_payload_mb", "max_concurrent_transforms", "content_type",
        "accept", "assemble_with", "environment", "job_name_prefix", "aws_conn_id", "region_name", "verify",
        "check_interval", "max_ingestion_time", "create_model", "model_config", "execution_role_arn",
        "price_per_instance_hour", "dead_letter", "dead_letter_max_records",
    )
    template_fields_renderers = {"environment": "json", "model_environment": "json", "model_config": "json"}
    ui_color = "#fdf2e8"
    operator_extra_links = (TransformJobLink(),)

    def __init__(
        self,
        *,
        shards: Any,
        model_name: str,
        model_data_url: str | None = None,
        image: str = DEFAULT_IMAGE,
        model_environment: dict[str, str] | None = None,
        backend: str = "local",
        instance_type: str = "ml.m5.xlarge",
        instance_count: int | str = 1,
        batch_strategy: str = "MultiRecord",
        max_payload_mb: int | str = 6,
        max_concurrent_transforms: int | str | None = None,
        content_type: str | None = None,
        accept: str = "text/csv",
        assemble_with: str = "Line",
        environment: dict[str, str] | None = None,
        job_name_prefix: str | None = None,
        region_name: str | None = None,
        verify: bool | str | None = None,
        botocore_config: dict[str, Any] | None = None,
        wait_for_completion: bool = True,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        check_interval: int | float | str = 30,
        max_ingestion_time: int | float | str | None = None,
        create_model: bool | str = False,
        model_config: dict[str, Any] | None = None,
        execution_role_arn: str | None = None,
        price_per_instance_hour: float | str | None = None,
        dead_letter: bool | str = False,
        dead_letter_max_records: int | str = 100,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.shards = shards
        self.model_name = model_name
        self.model_data_url = model_data_url
        self.image = image
        self.model_environment = model_environment or {}
        self.backend = backend
        self.instance_type = instance_type
        self.instance_count = instance_count
        self.batch_strategy = batch_strategy
        self.max_payload_mb = max_payload_mb
        self.max_concurrent_transforms = max_concurrent_transforms
        self.content_type = content_type
        self.accept = accept
        self.assemble_with = assemble_with
        self.environment = environment or {}
        self.job_name_prefix = job_name_prefix
        self.region_name = region_name
        self.verify = verify
        self.botocore_config = botocore_config
        self.wait_for_completion = wait_for_completion
        self.deferrable = deferrable
        self.check_interval = check_interval
        self.max_ingestion_time = max_ingestion_time
        self.create_model = create_model
        self.model_config = model_config
        self.execution_role_arn = execution_role_arn
        self.price_per_instance_hour = price_per_instance_hour
        self.dead_letter = dead_letter
        self.dead_letter_max_records = dead_letter_max_records
        self._job_name: str | None = None
        self._job_done = False
        self._lineage: tuple[str | None, str | None] = (None, None)

    @cached_property
    def sagemaker_hook(self) -> Any:
        """The amazon provider's ``SageMakerHook`` for this task's connection (built on first use)."""
        from airflow.providers.amazon.aws.hooks.sagemaker import SageMakerHook

        return SageMakerHook(aws_conn_id=self.aws_conn_id, region_name=self.region_name, verify=self.verify,
                             config=self.botocore_config)

    # -- shared -------------------------------------------------------------------------------------------

    def _price(self) -> float | None:
        return _number("price_per_instance_hour", self.price_per_instance_hour)

    def _model_request(self) -> dict[str, Any]:
        if self.model_config:
            return dict(self.model_config)
        return build_model_request(model_name=self.model_name, model_data_url=self.model_data_url,
                                   image=self.image, environment=self.model_environment,
                                   execution_role_arn=self.execution_role_arn or None)

    def _transform_request(self, summary: dict[str, Any], *, job_name: str, model_name: str, output_uri: str,
                           instance_count: int, input_uri: str | None = None) -> dict[str, Any]:
        try:
            return build_transform_request(
                job_name=job_name,
                model_name=model_name,
                input_uri=input_uri or summary["manifest_uri"],
                output_uri=output_uri,
                content_type=self.content_type or summary["content_type"],
                accept=self.accept,
                assemble_with=self.assemble_with,
                instance_type=self.instance_type,
                instance_count=instance_count,
                batch_strategy=self.batch_strategy,
                max_payload_mb=self.max_payload_mb,
                max_concurrent_transforms=self.max_concurrent_transforms,
                environment=self.environment,
            )
        except ValueError as exc:
            raise AirflowFailException(str(exc)) from exc

    def _fail_unless_completed(self, description: dict[str, Any], summary: dict[str, Any]) -> None:
        status = description["TransformJobStatus"]
        if status == "Completed":
            return
        name = description.get("TransformJobName", self._job_name)
        default = "stopped before it finished (StopTransformJob, a timeout or a kill)" if status == "Stopped" \
            else "no reason given"
        reason = str(description.get("FailureReason") or default)
        where = [f"{key} holds {origin}" for key, origin in shard_origins(summary).items() if key in reason]
        raise AirflowException(f"transform job {name} ended {status}: {reason}"
                               + (f" ({'; '.join(where)})" if where else ""))

    def _result(self, description: dict[str, Any], *, output_uri: str, records: int, **extra: Any
                ) -> dict[str, Any]:
        from airflow_bt.transform.backends.sagemaker import billing

        bill = billing(description, self._price())
        self._lineage = (self._lineage[0], output_uri)
        cost = (f", cost ${bill['cost']:.6f} at ${bill['price_per_instance_hour']:g}/instance-hour"
                if "cost" in bill else " (no transform.price_per_instance_hour given: cost not computed)")
        self.log.info("transform job %s %s: %.2f s on %d instance(s) = %.3f billable instance-seconds%s",
                      description["TransformJobName"], description["TransformJobStatus"], bill["seconds"],
                      bill["instance_count"], bill["billable_instance_seconds"], cost)
        result = {
            "job_name": description["TransformJobName"],
            "job_arn": description.get("TransformJobArn"),
            "status": description["TransformJobStatus"],
            "backend": self.backend,
            "output_uri": output_uri,
            "instance_count": bill["instance_count"],
            "records": records,
            "started_at": bill["started_at"],
            "ended_at": bill["ended_at"],
            "billable_instance_seconds": bill["billable_instance_seconds"],
            **extra,
        }
        for key in ("price_per_instance_hour", "cost"):
            if key in bill:
                result[key] = bill[key]
        return result

    def execute(self, context: Context) -> dict[str, Any]:
        if self.backend not in BACKENDS:
            raise AirflowFailException(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        # values of sensitive-named variables (API_TOKEN, DB_PASSWORD, ...) never show in the task log
        mask_sensitive_values(self.environment)
        mask_sensitive_values(self.model_environment)
        summary = self.read_shard_summary(self.shards)
        self._lineage = (summary.get("shard_prefix") or summary.get("manifest_uri"), None)
        layout = RunLayout(work_root=self.shards["work_uri"], output_root="", slug=self.shards["run_slug"])
        shard_count = len(summary["shards"])
        if shard_count == 0:
            self.log.info("the partition has no records: no transform job is started (nothing to pay for)")
            return {"job_name": None, "status": "Skipped", "backend": self.backend,
                    "shards_summary_uri": self.shards["summary_uri"],
                    "output_uri": layout.step_prefix("transform", try_number(context)), "records": 0,
                    "billable_instance_seconds": 0.0}
        try:
            instance_count = int(self.instance_count)
        except (TypeError, ValueError):
            raise AirflowFailException(f"instance_count must be a whole number, got {self.instance_count!r}") \
                from None
        if instance_count > shard_count:
            self.log.info("instance count capped from %d to %d: there are %d shard(s) and one shard never "
                          "spans instances", instance_count, shard_count, shard_count)
            instance_count = shard_count
        self._price()  # a bad price fails now, not after the job ran
        if self.backend == "sagemaker":
            result = self._execute_sagemaker(context, summary, layout, instance_count)
        else:
            result = self._execute_local(context, summary, layout, instance_count)
        return {**result, "shards_summary_uri": self.shards["summary_uri"]}

    # -- local ----------------------------------------------------------------------------------------------

    def _execute_local(self, context: Context, summary: dict[str, Any], layout: RunLayout, instance_count: int
                       ) -> dict[str, Any]:
        from airflow_bt.transform.backends.local import run_local

        attempt = try_number(context)
        output_uri = layout.step_prefix("transform", attempt)
        job_name = transform_job_name(self.job_name_prefix or self.model_name, str(context["ds"]), layout.slug,
                                      attempt)
        model_request = self._model_request()
        store = self.hook.storage(layout.run_prefix)
        fingerprint = prediction_fingerprint(
            model_fingerprint(model_request, self._artifact_etag(model_request)),
            self._transform_request(summary, job_name=job_name, model_name=self.model_name, output_uri=output_uri,
                                    instance_count=instance_count))
        earlier = [layout.step_prefix("transform", t) for t in range(attempt - 1, 0, -1)
                   if self._same_predictions(store, layout.step_file("transform", t, ".job.json"), fingerprint)]
        store.put_bytes(layout.step_file("transform", attempt, ".job.json"),
                        json.dumps({"job_name": job_name, "prediction_fingerprint": fingerprint}).encode())
        reused, input_uri = self._plan_partial_retry(store, summary, earlier,
                                                     layout.step_file("transform", attempt, ".manifest"))
        prefixes = [output_uri, *dict.fromkeys(reused.values())]
        if len(reused) == len(summary["shards"]):
            self.log.info("every shard's predictions exist from earlier tries (%s): no transform job is started",
                          ", ".join(prefixes[1:]))
            return self._reused_result(output_uri, reused, summary)
        instance_count = min(instance_count, len(summary["shards"]) - len(reused))
        request = self._transform_request(summary, job_name=job_name, model_name=self.model_name,
                                          output_uri=output_uri, instance_count=instance_count, input_uri=input_uri)
        self.log.info("transform job %s: %d shard(s), %d record(s), %d instance(s) of %s, backend local",
                      job_name, len(summary["shards"]) - len(reused), summary["records"], instance_count,
                      self.instance_type)
        description = run_local(request, model_request, aws_conn_id=self.aws_conn_id, log=self.log,
                                dead_letter=_bool("dead_letter", self.dead_letter),
                                dead_letter_max_records=int(self.dead_letter_max_records))
        self._fail_unless_completed(description, summary)
        stats = description.get("LocalEngineStats", {})
        self.log.info("transform job %s: %s records (%.0f records/s)", job_name, stats.get("records", "?"),
                      stats.get("records_per_second", 0.0))
        failpoint("transform.before_return", output_uri)
        return self._result(description, output_uri=output_uri, records=stats.get("records", summary["records"]),
                            prediction_prefixes=prefixes, reused_shards=len(reused),
                            rejected=stats.get("rejected", 0))

    def _artifact_etag(self, model_request: dict[str, Any]) -> str | None:
        """The ETag (size-mtime for files) of the model's artifact: a ``model.tar.gz`` replaced at the same
        URL is another model, whose predictions are not reused."""
        url = model_request.get("PrimaryContainer", {}).get("ModelDataUrl")
        if not url:
            return None
        try:
            return str(self.hook.storage(url).stat(url).etag)
        except Exception:  # no artifact to stat (a folder, a running container): the request alone
            return None

    def _same_predictions(self, store: Any, job_record_uri: str, fingerprint: str) -> bool:
        """Whether an earlier try's job (its ``.job.json``) predicts what this try's job will."""
        from airflow_bt.storage import ObjectNotFoundError

        try:
            record = json.loads(store.read_bytes(job_record_uri))
        except ObjectNotFoundError:
            return False
        return bool(record.get("prediction_fingerprint") == fingerprint)

    def _reused_result(self, output_uri: str, reused: dict[str, str], summary: dict[str, Any]) -> dict[str, Any]:
        """The return value when earlier tries left every shard's predictions: no job, nothing billed."""
        return {"job_name": None, "status": "Reused", "backend": self.backend, "output_uri": output_uri,
                "prediction_prefixes": [output_uri, *dict.fromkeys(reused.values())],
                "reused_shards": len(reused), "records": summary["records"], "billable_instance_seconds": 0.0}

    def _plan_partial_retry(self, store: Any, summary: dict[str, Any], earlier: list[str], manifest_uri: str
                            ) -> tuple[dict[str, str], str]:
        """The shards earlier tries finished (key -> their prefix), and the manifest of the rest to process."""
        from airflow_bt.steps.predictions import complete_outputs, subset_manifest

        if not earlier:
            return {}, summary["manifest_uri"]
        reused = complete_outputs(store, summary, earlier)
        if not reused:
            return {}, summary["manifest_uri"]
        missing = [s["key"] for s in summary["shards"] if s["key"] not in reused]
        self.log.info("partial retry: %d of %d shard(s) already have complete predictions from earlier tries; "
                      "processing the other %d", len(reused), len(summary["shards"]), len(missing))
        if not missing:
            return reused, summary["manifest_uri"]
        return reused, subset_manifest(store, summary, missing, manifest_uri)

    # -- sagemaker ------------------------------------------------------------------------------------------

    def _timeout_seconds(self) -> float | None:
        limit = _number("max_ingestion_time", self.max_ingestion_time, minimum=1)
        if limit is None and self.execution_timeout is not None:
            limit = self.execution_timeout.total_seconds()
        return limit

    def _persist_link(self, context: Context, job_name: str) -> None:
        if not self.do_xcom_push:
            return
        try:
            TransformJobLink.persist(context, region_name=self.sagemaker_hook.conn_region_name,
                                     aws_partition=self.sagemaker_hook.conn_partition, job_name=job_name)
        except Exception:  # the link is a convenience: never fail the task over it
            self.log.warning("could not store the console link of %s", job_name, exc_info=True)

    def _execute_sagemaker(self, context: Context, summary: dict[str, Any], layout: RunLayout,
                           instance_count: int) -> dict[str, Any]:
        from airflow_bt.transform.backends import sagemaker as sm
        from airflow_bt.transform.spec import TransformSpecError, validate_transform_request

        hook = self.sagemaker_hook
        attempt = try_number(context)
        check_interval = _number("check_interval", self.check_interval, minimum=0.01) or 30.0
        timeout = self._timeout_seconds()
        deadline = time.time() + timeout if timeout else None
        base = run_job_name(self.job_name_prefix or self.model_name, str(context["ds"]), layout.slug)
        model_request: dict[str, Any] | None = None
        model_name = self.model_name
        if _bool("create_model", self.create_model):
            model_request = self._model_request()
            model_name = model_request["ModelName"] = sm.versioned_model_name(
                str(model_request["ModelName"]), model_request, self._artifact_etag(model_request))
        settings = job_settings(self._transform_request(summary, job_name=base, model_name=model_name,
                                                        output_uri=layout.run_prefix, instance_count=instance_count))
        choice = sm.choose_job(hook, base, attempt, self.log, model_name=model_name, settings=settings)
        job_name = choice.name
        description = choice.existing
        if description is None:
            if model_request is not None:
                sm.ensure_model(hook, model_request, self.log)
            output_uri = as_prefix(join_uri(layout.run_prefix, "transform", job_name))
            store = self.hook.storage(layout.run_prefix)
            reused, input_uri = self._plan_partial_retry(
                store, summary, self._earlier_job_outputs(base, attempt, model_name, settings, exclude=job_name),
                join_uri(layout.run_prefix, "transform", f"{job_name}.manifest"))
            if len(reused) == len(summary["shards"]):
                self.log.info("every shard's predictions exist from earlier jobs of this run: no job is started")
                return self._reused_result(output_uri, reused, summary)
            instance_count = min(instance_count, len(summary["shards"]) - len(reused))
            request = self._transform_request(summary, job_name=job_name, model_name=model_name,
                                              output_uri=output_uri, instance_count=instance_count,
                                              input_uri=input_uri)
            try:
                validate_transform_request(request)
            except TransformSpecError as exc:
                raise AirflowFailException(f"invalid transform request: {exc}") from exc
            self.log.info("transform job %s: %d shard(s), %d record(s), %d instance(s) of %s, model %s, "
                          "backend sagemaker", job_name, len(summary["shards"]), summary["records"],
                          instance_count, self.instance_type, model_name)
            self._job_name = job_name
            description = sm.create_job(hook, request, self.log)
        self._job_name = job_name
        self._persist_link(context, job_name)
        status = description["TransformJobStatus"] if description else "InProgress"
        if status in sm.NON_TERMINAL:
            if not _bool("wait_for_completion", self.wait_for_completion):
                self.log.info("not waiting for transform job %s (wait_for_completion=False)", job_name)
                description = sm.describe_or_none(hook, job_name) or {"TransformJobName": job_name}
                self._job_done = True  # on_kill must not stop a job this task hands over
                return {"job_name": job_name, "job_arn": description.get("TransformJobArn"),
                        "status": description.get("TransformJobStatus", "InProgress"), "backend": self.backend,
                        "output_uri": self._output_of(description, layout, job_name),
                        "instance_count": instance_count, "records": summary["records"]}
            if _bool("deferrable", self.deferrable):
                self._defer(job_name, check_interval, deadline, timeout)
            description = self._wait(job_name, check_interval, deadline)
        assert description is not None
        return self._finish(description, summary, layout, attempt=attempt, ds=str(context["ds"]))

    def _earlier_job_outputs(self, base: str, attempt: int, model_name: str | None, settings: dict[str, Any], *,
                             exclude: str) -> list[str]:
        """Output prefixes of this run's earlier jobs that ended Failed/Stopped with the same model and the same
        prediction-changing settings (:func:`~airflow_bt.transform.fingerprint.job_settings`), newest first."""
        from airflow_bt.transform.backends import sagemaker as sm

        prefixes = []
        for name in reversed(sm.run_job_names(base, attempt)):
            if name == exclude:
                continue
            description = sm.describe_or_none(self.sagemaker_hook, name)
            if (description and description["TransformJobStatus"] in sm.FAILED
                    and description.get("ModelName") == model_name and job_settings(description) == settings):
                path = description.get("TransformOutput", {}).get("S3OutputPath")
                if path:
                    prefixes.append(as_prefix(path))
        return prefixes

    def _output_of(self, description: dict[str, Any], layout: RunLayout, job_name: str) -> str:
        path = description.get("TransformOutput", {}).get("S3OutputPath")
        return as_prefix(path) if path else as_prefix(join_uri(layout.run_prefix, "transform", job_name))

    def _defer(self, job_name: str, check_interval: float, deadline: float | None, timeout: float | None) -> None:
        from airflow_bt.triggers.transform_job import TransformJobTrigger

        self.log.info("deferring: the triggerer polls transform job %s every %g s%s", job_name, check_interval,
                      f" for at most {timeout:g} s" if timeout else " until it ends")
        # The trigger fires "timeout" at the deadline, so the job is stopped; Airflow's own timeout is a backstop.
        backstop = timedelta(seconds=timeout + 2 * check_interval + 60) if timeout else None
        self.defer(
            trigger=TransformJobTrigger(job_name, aws_conn_id=self.aws_conn_id, region_name=self.region_name,
                                        verify=self.verify, botocore_config=self.botocore_config,
                                        poll_interval=check_interval, deadline=deadline),
            method_name="execute_complete",
            timeout=backstop,
        )

    def _wait(self, job_name: str, check_interval: float, deadline: float | None) -> dict[str, Any]:
        from airflow_bt.transform.backends import sagemaker as sm

        try:
            description = sm.wait_for_job(self.sagemaker_hook, job_name, check_interval=check_interval,
                                          deadline=deadline, log=self.log)
        except sm.JobWaitTimeout as exc:
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
        from airflow_bt.transform.backends.sagemaker import stop_job

        if self._job_done:
            return
        self._job_done = True
        try:
            stop_job(self.sagemaker_hook, job_name, self.log)
        except Exception:
            self.log.exception("could not stop transform job %s", job_name)

    def _finish(self, description: dict[str, Any], summary: dict[str, Any], layout: RunLayout, *, attempt: int,
                ds: str) -> dict[str, Any]:
        self._job_done = True
        self._fail_unless_completed(description, summary)
        job_name = description["TransformJobName"]
        output_uri = self._output_of(description, layout, job_name)
        prefixes = [output_uri]
        if attempt > 1:  # a partial retry's job processed only some shards: the others come from earlier jobs
            base = run_job_name(self.job_name_prefix or self.model_name, ds, layout.slug)
            prefixes += self._earlier_job_outputs(base, attempt, description.get("ModelName"),
                                                  job_settings(description), exclude=job_name)
        failpoint("transform.before_return", layout.run_prefix)
        return self._result(description, output_uri=output_uri, records=summary["records"],
                            model_name=description.get("ModelName"), prediction_prefixes=prefixes)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resume after the trigger fired: check the event's status, never assume success."""
        from airflow_bt.transform.backends import sagemaker as sm

        if not isinstance(event, dict) or "status" not in event or "job_name" not in event:
            raise AirflowException(f"transform trigger sent an unexpected event: {event!r}")
        job_name = str(event["job_name"])
        self._job_name = job_name
        summary = self.read_shard_summary(self.shards)
        self._lineage = (summary.get("shard_prefix") or summary.get("manifest_uri"), None)
        layout = RunLayout(work_root=self.shards["work_uri"], output_root="", slug=self.shards["run_slug"])
        if event["status"] == "timeout":
            self._stop(job_name)
            raise AirflowException(f"{event.get('message')}; max_ingestion_time/execution_timeout reached: "
                                   "the job was stopped")
        if event["status"] == "error":
            raise AirflowException(f"waiting for transform job {job_name} failed: {event.get('message')}")
        description = sm.describe_or_none(self.sagemaker_hook, job_name)
        if description is None:
            raise AirflowException(f"transform job {job_name} no longer exists")
        if description["TransformJobStatus"] in sm.NON_TERMINAL:  # an event status the job no longer agrees with
            raise AirflowException(f"trigger reported {event['status']} but transform job {job_name} is "
                                   f"{description['TransformJobStatus']}")
        result = self._finish(description, summary, layout, attempt=try_number(context), ds=str(context["ds"]))
        return {**result, "shards_summary_uri": self.shards["summary_uri"]}

    def on_kill(self) -> None:
        """The task is being killed (SIGTERM, a timeout, marked failed): stop the job it runs."""
        if self.backend == "sagemaker" and self._job_name and not self._job_done:
            self.log.warning("task killed: stopping transform job %s", self._job_name)
            self._stop(self._job_name)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage: the shards the job read and the predictions it wrote (if OpenLineage is installed)."""
        from airflow.providers.common.compat.openlineage.facet import Dataset
        from airflow.providers.openlineage.extractors import OperatorLineage

        from airflow_bt.storage.uris import scheme_of, split_s3

        def datasets(uri: str | None) -> list[Any]:
            if not uri:
                return []
            if scheme_of(uri) == "s3":
                bucket, key = split_s3(uri)
                return [Dataset(namespace=f"s3://{bucket}", name=key.rstrip("/") or "/")]
            return [Dataset(namespace="file", name=uri.removeprefix("file://").rstrip("/"))]

        shards, predictions = self._lineage
        return OperatorLineage(inputs=datasets(shards), outputs=datasets(predictions))
