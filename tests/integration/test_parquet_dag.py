"""The shipped Parquet DAG (dags/configs/churn_parquet.yaml), run by `airflow dags test` end to end, read
back as an engine reads it: pyarrow over the attempt prefix, and DuckDB's read_parquet."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from airflow_env import airflow, airflow_env
from table_checks import assert_pointers_agree

from integration.test_nightly_dag import expected_probabilities

pytestmark = pytest.mark.integration
DS = "2026-06-24"
DAG_ID = "churn_parquet_nightly_scoring"


def test_parquet_dag_publishes_typed_rows_an_engine_reads_as_is(airflow_home, demo_root, tmp_path):
    import duckdb
    import pyarrow as pa
    import pyarrow.dataset as pads
    import pyarrow.parquet as pq

    proc = airflow(airflow_env(airflow_home, demo_root), "dags", "test", DAG_ID, DS)
    assert "state=failed" not in proc.stdout + proc.stderr
    out = demo_root / "output/churn_parquet" / f"dt={DS}"
    attempt = Path(json.loads((out / "_LATEST.json").read_text())["attempt_prefix"].removeprefix("file://"))
    manifest = json.loads((attempt / "_manifest.json").read_text())

    inputs = sorted((demo_root / "input/churn_parquet" / f"dt={DS}").glob("*.parquet"))
    expected = pa.concat_tables([pq.read_table(p) for p in inputs])
    # an engine pointed at the attempt prefix: _manifest.json, _SUCCESS and _errors/ are not data
    table = pads.dataset(attempt, format="parquet", exclude_invalid_files=False).to_table()
    # the inputs' columns, the prediction, and the day (the Iceberg table's partition column, publish.table)
    assert table.schema.names == [*expected.schema.names, "churn_probability", "scored_date"]
    assert table.schema.field("churn_probability").type == pa.float64()
    assert table.select(expected.schema.names).equals(expected)  # every row, in order, with its types
    assert manifest["rows_in"] == manifest["rows_out"] == table.num_rows == 3000
    assert manifest["format"] == "parquet" and manifest["input_format"] == "parquet"
    assert manifest["columns"] == table.schema.names
    assert manifest["columns_sent"] == [c for c in expected.schema.names if c != "customer_id"]

    # the model saw every column but customer_id, and scored each row as the handler scores the full row
    csv_rows = [[("" if v is None else str(v)) for v in row.values()] for row in expected.to_pylist()]
    want = [float(p) for p in expected_probabilities(demo_root, csv_rows, tmp_path)]
    got = table.column("churn_probability").to_pylist()
    assert max(abs(a - b) for a, b in zip(got, want, strict=True)) <= 5e-7

    engine = duckdb.connect()
    counted = engine.execute(
        f"select count(*), count(distinct customer_id) from read_parquet('{attempt}/**/*.parquet')"
    ).fetchone()
    assert counted == (3000, 3000)
    # the Iceberg table scoring.churn_parquet holds this attempt's parts, registered as they are (Airflow 3)
    state = assert_pointers_agree(demo_root, "churn_parquet", DS, "scoring.churn_parquet")
    if state is not None:
        assert state["rows"] == 3000 and all(f.startswith(f"file://{attempt}/") for f in state["files"])
    assert engine.execute(f"select typeof(signup_date) from read_parquet('{attempt}/*.parquet') limit 1"
                          ).fetchone() == ("DATE",)
