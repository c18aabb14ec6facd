"""The day pointers a publish task moves, built from its settings (``publish.table``, ``publish.glue_table``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from airflow_bt.logs import LogLike
from airflow_bt.tables.pointers import DayPointer


@dataclass
class Targets:
    """The pointers to move, and the ones that cannot run here (with the reason, for the task log and XCom)."""

    pointers: list[DayPointer] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    iceberg: Any = None  # the IcebergTablePointer, for its snapshot id


def build_targets(table: dict[str, Any] | None, glue_table: dict[str, Any] | None, *, root_uri: str,
                  aws_conn_id: str | None, logger: LogLike) -> Targets:
    """An Iceberg table pointer for ``table`` (``{identifier, catalog}``) and a Glue partition pointer for
    ``glue_table`` (``{database, table}``); credentials and endpoints from the AWS connection."""
    targets = Targets()
    if table:
        from airflow_bt.tables.catalog import (
            catalog_properties,
            catalog_unavailable,
            describe,
            load_catalog,
            with_connection,
        )
        from airflow_bt.tables.iceberg import IcebergTablePointer

        identifier = str(table["identifier"])
        properties = catalog_properties(table.get("catalog"), root_uri)
        reason = catalog_unavailable(properties)
        if reason:
            logger.warning("publish.table %s is not committed: %s", identifier, reason)
            targets.skipped[f"iceberg table {identifier}"] = reason
        else:
            properties = with_connection(properties, aws_conn_id)
            targets.iceberg = IcebergTablePointer(load_catalog(properties), identifier,
                                                  catalog_description=describe(properties))
            targets.pointers.append(targets.iceberg)
    if glue_table:
        from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

        from airflow_bt.tables.glue import GluePartitionPointer

        client = AwsBaseHook(aws_conn_id=aws_conn_id, client_type="glue").conn
        targets.pointers.append(GluePartitionPointer(client, str(glue_table["database"]), str(glue_table["table"]),
                                                     logger=logger))
    return targets
