"""What the DAG tests check of a publication: its rows (in any part format) and the day's three pointers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa

from airflow_bt.storage.uris import file_path


def read_parts(attempt: Path) -> pa.Table:
    """Every part of an attempt, in order, as one table (Parquet parts typed; CSV parts as pyarrow infers)."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    parts = sorted(p for p in attempt.iterdir() if p.name.startswith("part-"))
    tables = [pq.read_table(p) if p.suffix == ".parquet" else pacsv.read_csv(p) for p in parts]
    return pa.concat_tables(tables) if tables else pa.table({})


def read_inputs(root: Path, model: str, ds: str) -> pa.Table:
    """The day's CSV input, in file order, typed as pyarrow infers (as the publish step types CSV columns)."""
    import pyarrow.csv as pacsv

    files = sorted((root / "input" / model / f"dt={ds}").glob("*.csv"))
    return pa.concat_tables([pacsv.read_csv(f) for f in files])


def latest_attempt(root: Path, model: str, ds: str) -> Path:
    pointer = json.loads((root / "output" / model / f"dt={ds}" / "_LATEST.json").read_text())
    return Path(file_path(pointer["attempt_prefix"]))


def assert_rows_are_the_inputs(root: Path, model: str, ds: str, attempt: Path) -> pa.Table:
    """The attempt holds every input row once, in order, unchanged, each with a probability."""
    published, inputs = read_parts(attempt), read_inputs(root, model, ds)
    assert published.num_rows == inputs.num_rows
    assert published.select(inputs.column_names).equals(inputs.cast(published.select(inputs.column_names).schema))
    probabilities = published.column("churn_probability").to_pylist()
    assert all(0.0 <= p <= 1.0 for p in probabilities)
    return published


def table_state(root: Path, ds: str, identifier: str, catalog: dict[str, str] | None = None) -> dict[str, Any] | None:
    """The table's current state for ``ds`` (:func:`airflow_bt.tables.history.day_state`); None where the
    catalog cannot run (the SQL catalog on Airflow 2.11)."""
    from airflow_bt.tables.catalog import catalog_unavailable, default_catalog, load_catalog
    from airflow_bt.tables.history import day_state

    properties = catalog or default_catalog(root.as_uri()) or {}
    if catalog_unavailable(properties):
        return None
    return day_state(load_catalog(properties).load_table(identifier), ds)


def assert_pointers_agree(root: Path, model: str, ds: str, identifier: str, *, catalog: dict[str, str] | None = None,
                          glue: Any = None) -> dict[str, Any] | None:
    """``_LATEST.json``, the table's partition and (``glue``: a GluePartitionPointer) the Glue partition name
    the same attempt, and the table holds that attempt's parts, once. The table state, or None where the
    catalog cannot run here (then only the Glue partition is checked)."""
    attempt = latest_attempt(root, model, ds)
    prefix = f"file://{attempt}/"
    manifest = json.loads((attempt / "_manifest.json").read_text())
    if glue is not None:
        assert glue.current(ds) == prefix, f"the Glue partition names {glue.current(ds)}, _LATEST.json {prefix}"
    state = table_state(root, ds, identifier, catalog)
    if state is None:
        return None
    assert state["attempt_prefix"] == prefix, f"{identifier} holds {state['attempt_prefix']}, _LATEST.json {prefix}"
    assert state["files"] == sorted(part["uri"] for part in manifest["parts"])  # the attempt's own files
    assert state["rows"] == manifest["rows_out"]
    return state


class GlueCatalogs:
    """A moto server serving Glue: the Iceberg table's catalog (``{type: glue}``) and the Hive table beside it."""

    def __init__(self, url: str, warehouse: Path) -> None:
        import uuid

        self.url = url
        # moto keeps one state for every server of the test process: this test's own database and table names
        self.database = f"scoring_{uuid.uuid4().hex[:8]}"
        self.identifier = f"{self.database}.churn"
        self.properties = {"type": "glue", "warehouse": f"file://{warehouse}", "glue.endpoint": url,
                           "glue.region": "us-east-1", "glue.access-key-id": "testing",
                           "glue.secret-access-key": "testing"}
        self.client().create_database(DatabaseInput={"Name": self.database})

    def client(self):
        import boto3

        return boto3.client("glue", endpoint_url=self.url, region_name="us-east-1", aws_access_key_id="testing",
                            aws_secret_access_key="testing")

    def env(self) -> dict[str, str]:
        """The Airflow processes' settings: an AWS connection whose Glue endpoint is the server, and the catalog
        (credentials and endpoint come from the connection, as in production)."""
        import json

        connection = {"conn_type": "aws", "login": "testing", "password": "testing",
                      "extra": {"region_name": "us-east-1", "service_config": {"glue": {"endpoint_url": self.url}}}}
        return {"AIRFLOW_CONN_AWS_DEFAULT": json.dumps(connection),
                "AIRFLOW_BT_CATALOG": json.dumps({"type": "glue", "warehouse": self.properties["warehouse"]})}

    def hive_partition(self):
        from airflow_bt.tables.glue import GluePartitionPointer

        return GluePartitionPointer(self.client(), self.database, "churn_hive")

    def publish_settings(self) -> dict[str, Any]:
        """A test's copy of churn.yaml's ``publish``: the Iceberg table in this database, a Hive table beside it."""
        return {"table": {"identifier": self.identifier}, "glue_table": {"database": self.database,
                                                                        "table": "churn_hive"}}

