"""What the pipeline's operators share: a cached storage hook and the shard step's summary."""

from __future__ import annotations

import json
from functools import cached_property
from typing import Any

from airflow_bt.compat import AirflowFailException, BaseOperator
from airflow_bt.hooks.storage import BatchStorageHook


class BatchStepOperator(BaseOperator):
    """Base of the shard, transform and publish operators.

    :param aws_conn_id: the AWS connection for ``s3://`` URIs (``None``: boto3's defaults).
    """

    def __init__(self, *, aws_conn_id: str | None = "aws_default", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.aws_conn_id = aws_conn_id

    @cached_property
    def hook(self) -> BatchStorageHook:
        return BatchStorageHook(aws_conn_id=self.aws_conn_id)

    def read_shard_summary(self, shards: Any) -> dict[str, Any]:
        """The shard step's full summary, from the small dict it returned through XCom."""
        if not isinstance(shards, dict) or "summary_uri" not in shards:
            raise AirflowFailException(
                f"{self.task_id}: `shards` must be the shard task's return value (a dict with summary_uri), "
                f"got {shards!r}"
            )
        uri = shards["summary_uri"]
        return dict(json.loads(self.hook.storage(uri).read_bytes(uri)))
