"""OpenLineage facets of a step: the datasets it read and wrote, named by their URIs."""

from __future__ import annotations

from typing import Any


def operator_lineage(read: str | None, written: str | None) -> Any:
    """``OperatorLineage`` with one input and one output dataset (if OpenLineage is installed)."""
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

    return OperatorLineage(inputs=datasets(read), outputs=datasets(written))
