"""Run one Batch Transform job over the shards, on the local engine or SageMaker."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow_bt.compat import AirflowException, AirflowFailException, Context, try_number
from airflow_bt.operators.base import BatchStepOperator
from airflow_bt.steps.layout import RunLayout
from airflow_bt.steps.naming import transform_job_name
from airflow_bt.steps.shard import shard_origins
from airflow_bt.transform.request import build_model_request, build_transform_request

BACKENDS = ("local", "sagemaker")
DEFAULT_IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"


class BatchTransformOperator(BatchStepOperator):
    """Build one ``CreateTransformJob`` request over the shard manifest and run it.

    Output goes to ``<run prefix>/transform-<try>/<shard>.out``; the job name is unique per attempt.
    The instance count is capped at the number of shards (one object never spans instances).

    :param shards: the shard task's return value (``shard_task.output``).
    :param model_name: the SageMaker model name (also names the job).
    :param model_data_url: the ``model.tar.gz`` (or folder) with ``code/inference.py``; local backend.
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
    """

    template_fields: Sequence[str] = (
        "shards", "model_name", "model_data_url", "image", "model_environment", "backend", "instance_type",
        "instance_count", "batch_strategy", "max_payload_mb", "max_concurrent_transforms", "content_type",
        "accept", "assemble_with", "environment", "job_name_prefix", "aws_conn_id",
    )
    template_fields_renderers = {"environment": "json", "model_environment": "json"}
    ui_color = "#fdf2e8"

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

    def execute(self, context: Context) -> dict[str, Any]:
        if self.backend not in BACKENDS:
            raise AirflowFailException(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        summary = self.read_shard_summary(self.shards)
        attempt = try_number(context)
        layout = RunLayout(work_root=self.shards["work_uri"], output_root="", slug=self.shards["run_slug"])
        output_uri = layout.step_prefix("transform", attempt)
        shard_count = len(summary["shards"])
        if shard_count == 0:
            self.log.info("the partition has no records: no transform job is started (nothing to pay for)")
            return {"job_name": None, "status": "Skipped", "output_uri": output_uri, "records": 0}
        instance_count = int(self.instance_count)
        if instance_count > shard_count:
            self.log.info("instance count capped from %d to %d: there are %d shard(s) and one shard never "
                          "spans instances", instance_count, shard_count, shard_count)
            instance_count = shard_count
        job_name = transform_job_name(self.job_name_prefix or self.model_name, str(context["ds"]),
                                      layout.slug, attempt)
        request = build_transform_request(
            job_name=job_name,
            model_name=self.model_name,
            input_uri=summary["manifest_uri"],
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
        model_request = build_model_request(
            model_name=self.model_name, model_data_url=self.model_data_url, image=self.image,
            environment=self.model_environment,
        )
        self.log.info("transform job %s: %d shard(s), %d record(s), %d instance(s) of %s, backend %s",
                      job_name, shard_count, summary["records"], instance_count, self.instance_type,
                      self.backend)
        if self.backend == "sagemaker":
            raise AirflowFailException(
                "backend 'sagemaker' is not available in this release of airflow_bt; use backend 'local'"
            )
        description = self._run_local(request, model_request)
        status = description["TransformJobStatus"]
        if status != "Completed":
            reason = str(description.get("FailureReason", "no reason given"))
            where = [f"{key} holds {origin}" for key, origin in shard_origins(summary).items() if key in reason]
            raise AirflowException(f"transform job {job_name} ended {status}: {reason}"
                                   + (f" ({'; '.join(where)})" if where else ""))
        start, end = description["TransformStartTime"], description["TransformEndTime"]
        seconds = (end - start).total_seconds()
        stats = description.get("LocalEngineStats", {})
        self.log.info("transform job %s completed in %.2f s: %s records (%.0f records/s)", job_name, seconds,
                      stats.get("records", "?"), stats.get("records_per_second", 0.0))
        return {
            "job_name": job_name,
            "job_arn": description.get("TransformJobArn"),
            "status": status,
            "backend": self.backend,
            "output_uri": output_uri,
            "instance_count": instance_count,
            "records": stats.get("records", summary["records"]),
            "started_at": start.isoformat(),
            "ended_at": end.isoformat(),
            "billable_instance_seconds": round(seconds * instance_count, 3),
        }

    def _run_local(self, request: dict[str, Any], model_request: dict[str, Any]) -> dict[str, Any]:
        from airflow_bt.transform.local_engine import run_transform_job

        storage = self.hook.storage(request["TransformOutput"]["S3OutputPath"])
        return run_transform_job(request, model_request, aws_conn_id=self.aws_conn_id
                                 if storage.scheme == "s3" else None, log=self.log)
