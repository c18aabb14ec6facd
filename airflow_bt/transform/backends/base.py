"""The interface the transform operator drives, whatever runs the job.

A backend takes SageMaker's own request shapes (``CreateModel``, ``CreateTransformJob``) and answers
with ``DescribeTransformJob``-shaped descriptions, so the operator has one flow for all of them:
choose the job (attach / reuse / new), plan the partial retry, create, wait or defer, finish.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from airflow_bt.steps.naming import retry_job_name
from airflow_bt.transform.backends.job_logs import LogTail


class TransformBackend(ABC):
    """Models and transform jobs somewhere: SageMaker, or the local engine.

    ``can_defer``: a job outlives the task process, so the task may wait on the triggerer or hand
    the job to a sensor (``wait_for_completion=False``). The local engine runs inside the task
    process, so its jobs cannot be handed over; the operator then waits itself.

    ``needs_model_request``: the backend runs a model from its ``CreateModel`` request (the local
    engine), so the operator always builds one; SageMaker can also run a model created elsewhere.
    """

    name: str = ""
    can_defer: bool = False
    needs_model_request: bool = False

    @abstractmethod
    def ensure_model(self, model_request: dict[str, Any]) -> str:
        """Make the model ``model_request`` names exist (reusing one of that name); returns its name."""

    @abstractmethod
    def create_job(self, request: dict[str, Any]) -> dict[str, Any] | None:
        """Start the job; ``None``, or the description of a job that took the name first (attach to it)."""

    @abstractmethod
    def describe(self, job_name: str) -> dict[str, Any] | None:
        """``DescribeTransformJob``, or ``None`` if there is no such job."""

    @abstractmethod
    def stop(self, job_name: str) -> None:
        """``StopTransformJob``; a job that already ended is left as it is."""

    @abstractmethod
    def wait(self, job_name: str, *, check_interval: float, deadline: float | None) -> dict[str, Any]:
        """Wait until the job ends and return its description; ``JobWaitTimeout`` at ``deadline``."""

    def console_link(self) -> dict[str, str | None] | None:
        """``region_name``/``aws_partition`` for the job's console link, or ``None`` if it has no console."""
        return None

    def log_tail(self, job_name: str, limit: int) -> LogTail:
        """The job's last ``limit`` log lines, or a note why there are none (never raises for missing logs)."""
        return LogTail(note=f"the {self.name} backend keeps no job logs")

    def trigger(self, job_name: str, *, poll_interval: float, deadline: float | None) -> Any:
        """The trigger that waits for the job on the triggerer (only where :attr:`can_defer`)."""
        raise NotImplementedError(f"the {self.name} backend cannot defer")

    def run_job_names(self, base: str, try_number: int) -> list[str]:
        """The names this run's jobs can have by ``try_number``, oldest first: ``base``, then ``base-r<try>``."""
        return [base] + [retry_job_name(base, t) for t in range(2, int(try_number) + 1)]
