"""Which Iceberg catalog a table lives in: pyiceberg properties from the DAG config, the footing, the connection.

The same shape on every footing (``publish.table.catalog``: pyiceberg catalog properties):

- embedded default (a ``file://`` data root, no ``catalog`` given): a SQL catalog on SQLite at
  ``<root>/catalog/catalog.db`` with its warehouse at ``<root>/catalog/warehouse/`` (:func:`default_catalog`);
- the docker-compose stack: ``{type: sql, uri: postgresql+psycopg2://.../iceberg, warehouse: s3://...}``;
- production: ``{type: glue}`` (or ``{type: rest, uri: ...}``, e.g. S3 Tables).

``$AIRFLOW_BT_CATALOG`` (a JSON object of properties), where the task runs, replaces the config's catalog, as
``$AIRFLOW_BT_ROOT`` replaces its root. Credentials, region and endpoints the properties do not give come from
the Airflow AWS connection (:func:`connection_properties`), for S3 and Glue alike, so a catalog needs no secret
of its own. The SQL catalog needs SQLAlchemy 2, which Airflow 3 has and Airflow 2.11 (SQLAlchemy 1.4) has not:
there, :func:`catalog_unavailable` says so and the Glue and REST catalogs work.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

CATALOG_ENV = "AIRFLOW_BT_CATALOG"
#: The catalog name pyiceberg is given when the properties name none.
DEFAULT_NAME = "airflow_bt"


def default_catalog(root_uri: str) -> dict[str, str] | None:
    """The embedded default for a ``file://`` root: SQLite under ``<root>/catalog/``; None for other roots."""
    if not root_uri.startswith("file://"):
        return None
    root = root_uri.removeprefix("file://").rstrip("/")
    return {"type": "sql", "uri": f"sqlite:///{root}/catalog/catalog.db", "warehouse": f"file://{root}/catalog/warehouse"}


def catalog_properties(configured: dict[str, Any] | None, root_uri: str) -> dict[str, str]:
    """The properties to load: ``$AIRFLOW_BT_CATALOG``, else the config's ``catalog``, else the default."""
    env = os.environ.get(CATALOG_ENV)
    if env:
        try:
            loaded = json.loads(env)
        except ValueError as exc:
            raise ValueError(f"${CATALOG_ENV} is not a JSON object of pyiceberg catalog properties: {exc}") from None
        if not isinstance(loaded, dict):
            raise ValueError(f"${CATALOG_ENV} must be a JSON object of pyiceberg catalog properties")
        return {str(k): str(v) for k, v in loaded.items()}
    if configured:
        return {str(k): str(v) for k, v in configured.items()}
    default = default_catalog(root_uri)
    if default is None:
        raise ValueError(f"publish.table.catalog is required for a data root that is not file:// ({root_uri}): "
                         "e.g. {type: glue} on AWS, or a SQL/REST catalog (README, \"Tables\")")
    return default


def catalog_unavailable(properties: dict[str, str]) -> str | None:
    """Why this catalog cannot run in this environment, or None. The SQL catalog needs SQLAlchemy 2."""
    if properties.get("type", "rest") != "sql" and not properties.get("uri", "").startswith(("sqlite", "postgres")):
        return None
    import sqlalchemy

    if int(sqlalchemy.__version__.split(".")[0]) < 2:
        return (f"pyiceberg's SQL catalog needs SQLAlchemy 2, and this environment has {sqlalchemy.__version__} "
                "(Airflow 2.11 pins 1.4): use a Glue or REST catalog on Airflow 2.11, or Airflow 3 "
                "(README, \"Tables\")")
    return None


def connection_properties(aws_conn_id: str | None) -> dict[str, str]:
    """pyiceberg S3 and Glue properties from an Airflow AWS connection: credentials, region, endpoints."""
    if not aws_conn_id:
        return {}
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    hook = AwsBaseHook(aws_conn_id=aws_conn_id, client_type="s3")
    credentials = hook.get_credentials()
    extra = hook.conn_config.extra_config or {}
    service = extra.get("service_config") or {}
    region = hook.conn_region_name or hook.region_name
    found: dict[str, str | None] = {
        "s3.access-key-id": credentials.access_key,
        "s3.secret-access-key": credentials.secret_key,
        "s3.session-token": credentials.token,
        "s3.region": region,
        "s3.endpoint": (service.get("s3") or {}).get("endpoint_url") or extra.get("endpoint_url"),
        "glue.access-key-id": credentials.access_key,
        "glue.secret-access-key": credentials.secret_key,
        "glue.session-token": credentials.token,
        "glue.region": region,
        "glue.endpoint": (service.get("glue") or {}).get("endpoint_url") or extra.get("endpoint_url"),
    }
    return {key: str(value) for key, value in found.items() if value}


def with_connection(properties: dict[str, str], aws_conn_id: str | None) -> dict[str, str]:
    """``properties`` completed with what the connection gives (the properties win); a catalog that reaches neither
    S3 nor Glue (a SQL catalog with a file:// warehouse) as it is."""
    reaches_aws = (properties.get("type") == "glue" or properties.get("warehouse", "").startswith("s3")
                   or any(key.startswith("s3.") for key in properties))
    if not reaches_aws:
        return dict(properties)
    return {**connection_properties(aws_conn_id), **properties}


def load_catalog(properties: dict[str, str]) -> Any:
    """A pyiceberg catalog; a SQLite database's folder is made first (pyiceberg creates the file, not its folder)."""
    from pyiceberg.catalog import load_catalog as pyiceberg_load_catalog

    props = dict(properties)
    name = props.pop("name", DEFAULT_NAME)
    uri = props.get("uri", "")
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return pyiceberg_load_catalog(name, **props)


def describe(properties: dict[str, str]) -> str:
    """The catalog for logs: its type and where it is, without secrets."""
    where = properties.get("uri") or properties.get("glue.region") or ""
    if "@" in where:  # a database URL's password
        scheme, _, rest = where.partition("://")
        where = f"{scheme}://***@{rest.rsplit('@', 1)[-1]}"
    return f"{properties.get('type', 'rest')} catalog {where}".strip()
