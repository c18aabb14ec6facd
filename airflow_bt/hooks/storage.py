"""A hook over the storage layer, so operators and sensors share one way to reach ``file://`` and ``s3://``."""

from __future__ import annotations

from typing import Any

from airflow_bt.compat import BaseHook
from airflow_bt.storage import Storage, for_uri


class BatchStorageHook(BaseHook):
    """Reach the objects of a scoring pipeline by URI.

    :param aws_conn_id: the AWS connection used for ``s3://`` URIs (``None``: boto3's defaults).
    """

    conn_name_attr = "aws_conn_id"
    default_conn_name = "aws_default"
    conn_type = "aws"
    hook_name = "airflow_bt storage"

    def __init__(self, aws_conn_id: str | None = "aws_default", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.aws_conn_id = aws_conn_id
        self._stores: dict[str, Storage] = {}

    def storage(self, uri: str) -> Storage:
        """The (cached) storage that serves ``uri``'s scheme."""
        scheme = uri.split("://", 1)[0]
        if scheme not in self._stores:
            self._stores[scheme] = for_uri(uri, aws_conn_id=self.aws_conn_id)
        return self._stores[scheme]

    def get_conn(self) -> Any:
        return self
