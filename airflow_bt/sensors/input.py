"""Wait until a date partition's input has landed."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import Any

from airflow_bt.compat import BaseSensorOperator, Context
from airflow_bt.hooks.storage import BatchStorageHook
from airflow_bt.steps.layout import SUCCESS_NAME
from airflow_bt.steps.shard import is_data_key
from airflow_bt.storage.uris import join_uri


class InputPartitionSensor(BaseSensorOperator):
    """Succeeds when ``input_uri`` holds at least one data object (and, optionally, ``_SUCCESS``).

    :param input_uri: the partition's input prefix (``file://`` or ``s3://``).
    :param wait_for_success_marker: also require ``<input_uri>/_SUCCESS``, the upstream's "complete" flag.
    :param aws_conn_id: the AWS connection for ``s3://`` URIs.
    """

    template_fields: Sequence[str] = ("input_uri", "wait_for_success_marker", "aws_conn_id")
    ui_color = "#f4f0fd"

    def __init__(self, *, input_uri: str, wait_for_success_marker: bool | str = False,
                 aws_conn_id: str | None = "aws_default", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.input_uri = input_uri
        self.wait_for_success_marker = wait_for_success_marker
        self.aws_conn_id = aws_conn_id

    @cached_property
    def hook(self) -> BatchStorageHook:
        return BatchStorageHook(aws_conn_id=self.aws_conn_id)

    def poke(self, context: Context) -> bool:
        store = self.hook.storage(self.input_uri)
        if str(self.wait_for_success_marker).lower() in ("true", "1", "yes"):
            marker = join_uri(self.input_uri, SUCCESS_NAME)
            if not store.exists(marker):
                self.log.info("waiting for %s", marker)
                return False
        found = next((obj for obj in store.list(self.input_uri) if is_data_key(obj.key)), None)
        if found is None:
            self.log.info("no data objects under %s yet", self.input_uri)
            return False
        self.log.info("input present under %s (e.g. %s)", self.input_uri, found.key)
        return True
