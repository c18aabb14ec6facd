"""Which job a try of the transform step works with, and which shards it still has to score.

The jobs of one run are named ``base`` (the first try's), then ``base-r<try>`` for each try that had
to start over (:func:`~airflow_bt.steps.naming.run_job_name`), on every backend. A try:

1. **chooses its job** (:func:`choose_job`): the newest job of the run that predicts what this try
   would (same model name — which carries the model's fingerprint — and the same prediction-changing
   settings) and is running or completed is attached to; after ``Failed``/``Stopped``, or when the
   earlier job predicts something else, it names a new one (never a name already taken);
2. **plans a partial retry** (:func:`plan_partial_retry`): the complete ``.out`` objects of this run's
   earlier ``Failed``/``Stopped`` jobs with the same predictions (:func:`earlier_outputs`) are kept, and
   the new job gets a manifest of only the shards they leave.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from airflow_bt.logs import LogLike
from airflow_bt.steps.naming import retry_job_name
from airflow_bt.storage.base import Storage
from airflow_bt.storage.uris import as_prefix
from airflow_bt.transform.backends.base import TransformBackend
from airflow_bt.transform.fingerprint import job_settings
from airflow_bt.transform.secrets import masked_secrets
from airflow_bt.transform.status import TransformJobStatus


def prediction_settings(job: dict[str, Any]) -> dict[str, Any]:
    """:func:`~airflow_bt.transform.fingerprint.job_settings` of a request or description, secrets masked."""
    return job_settings(masked_secrets(job))


def predicts_the_same(description: dict[str, Any], model_name: str, settings: dict[str, Any]) -> bool:
    """Whether a described job ran ``model_name`` with the prediction-changing ``settings`` of this try."""
    return description.get("ModelName") in (None, model_name) and prediction_settings(description) == settings


@dataclass(frozen=True)
class JobChoice:
    """The job a try works with: an existing one to attach to (``existing``) or a new one to create."""

    name: str
    existing: dict[str, Any] | None = None


RunJobs = list[tuple[str, dict[str, Any]]]


def describe_run_jobs(backend: TransformBackend, base: str, try_number: int) -> RunJobs:
    """This run's jobs that exist, oldest first, each described once."""
    jobs = []
    for name in backend.run_job_names(base, try_number):
        description = backend.describe(name)
        if description is not None:
            jobs.append((name, description))
    return jobs


def choose_job(backend: TransformBackend, jobs: RunJobs, base: str, try_number: int, log: LogLike, *,
               model_name: str, settings: dict[str, Any]) -> JobChoice:
    """Attach to the run's newest job if it predicts what this try would and has not failed; else name a new one."""
    if not jobs:
        return JobChoice(base)
    name, description = jobs[-1]
    status = TransformJobStatus.of(description)
    if not predicts_the_same(description, model_name, settings):
        log.info("transform job %s of an earlier try ran model %s or other settings than this try's (model %s; "
                 "environment, filters, content types): this try starts a new job", name,
                 description.get("ModelName"), model_name)
    elif not status.failure:
        log.info("transform job %s of an earlier try is %s: attaching to it instead of starting another",
                 name, status.value)
        return JobChoice(name, description)
    else:
        log.info("transform job %s of an earlier try ended %s (%s): this try starts a new job", name, status.value,
                 description.get("FailureReason", "no reason given"))
    fresh = retry_job_name(base, try_number)
    candidate, n = fresh, 2
    while backend.describe(candidate) is not None:  # never a name already taken
        candidate, n = f"{fresh}-{n}", n + 1
    return JobChoice(candidate)


def output_prefix(description: dict[str, Any] | None, default: str) -> str:
    path = ((description or {}).get("TransformOutput") or {}).get("S3OutputPath")
    return as_prefix(path) if path else as_prefix(default)


def earlier_outputs(jobs: RunJobs, *, model_name: str, settings: dict[str, Any], exclude: str) -> list[str]:
    """Output prefixes of this run's jobs that ended Failed/Stopped with the same predictions, newest first
    (``exclude``: the job this try works with)."""
    prefixes = []
    for name, description in reversed(jobs):
        if name != exclude and TransformJobStatus.of(description).failure \
                and predicts_the_same(description, model_name, settings):
            path = (description.get("TransformOutput") or {}).get("S3OutputPath")
            if path:
                prefixes.append(as_prefix(path))
    return prefixes


@dataclass(frozen=True)
class RetryPlan:
    """The shards earlier jobs finished (key -> their prefix) and the manifest of the rest to score."""

    input_uri: str
    reused: dict[str, str] = field(default_factory=dict)

    def all_reused(self, shard_count: int) -> bool:
        return len(self.reused) == shard_count


def plan_partial_retry(store: Storage, summary: dict[str, Any], earlier: list[str], manifest_uri: str,
                       log: LogLike) -> RetryPlan:
    """Keep the complete predictions of ``earlier`` prefixes; a manifest (at ``manifest_uri``) of the rest."""
    from airflow_bt.steps.predictions import complete_outputs, subset_manifest

    reused = complete_outputs(store, summary, earlier) if earlier else {}
    if not reused:
        return RetryPlan(summary["manifest_uri"])
    missing = [s["key"] for s in summary["shards"] if s["key"] not in reused]
    log.info("partial retry: %d of %d shard(s) already have complete predictions from earlier tries; "
             "processing the other %d", len(reused), len(summary["shards"]), len(missing))
    if not missing:
        return RetryPlan(summary["manifest_uri"], reused)
    return RetryPlan(subset_manifest(store, summary, missing, manifest_uri), reused)
