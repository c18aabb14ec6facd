"""Retention of scratch as the DAG's last task: the model's old ``work/`` run folders of published days."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow_bt.compat import Context
from airflow_bt.operators.base import BatchStepOperator
from airflow_bt.operators.templated import required_number


class ScratchRetentionOperator(BatchStepOperator):
    """Delete the run folders under ``work_root`` whose day is published and that are older than ``work_days``.

    A run folder is ``<work_root>/dt=<day>/<run slug>/``; it goes when ``<output_root>/dt=<day>/_LATEST.json``
    names a complete attempt, nothing in it was written for ``work_days`` days and no local transform job of
    it lacks its end record (:mod:`airflow_bt.steps.retention`). Every deleted folder is logged; nothing
    under ``output_root`` is touched.

    :param work_root: the model's scratch root, e.g. ``<root>/work/churn/``.
    :param output_root: the model's output root, e.g. ``<root>/output/churn/``.
    :param work_days: the age, in days, of a run folder's newest object before it may go.
    :param aws_conn_id: the AWS connection for ``s3://`` URIs.
    """

    template_fields: Sequence[str] = ("work_root", "output_root", "work_days", "aws_conn_id")
    ui_color = "#f4f4f4"

    def __init__(self, *, work_root: str, output_root: str, work_days: float | str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.work_root, self.output_root, self.work_days = work_root, output_root, work_days

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_bt.steps.retention import apply_retention, plan_retention

        days = required_number("work_days", self.work_days, minimum=0)
        store = self.hook.storage(self.work_root)
        folders = plan_retention(store, self.work_root, self.output_root, days * 86400)
        for folder in folders:
            if not folder.delete:
                self.log.info("keeping %s: %s", folder.prefix, folder.reason)
        done = apply_retention(store, folders, self.log)
        self.log.info("retention: deleted %d run folder(s), %d object(s), %.1f MB; kept %d", done["folders"],
                      done["objects"], done["bytes"] / 1e6, len(folders) - done["folders"])
        return {**done, "kept": len(folders) - done["folders"], "work_root": self.work_root}
