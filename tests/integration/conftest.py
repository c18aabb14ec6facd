from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from airflow_env import PostgresDatabase, airflow, airflow_env, postgres_unavailable_reason

from airflow_bt.demo.data import generate_range
from airflow_bt.demo.model import train_model

DAYS = ("2026-06-23", "2026-06-24")


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    """Two small days of demo input (3 files x 1,000 rows each, and their Parquet copy) and a small demo model."""
    root = tmp_path_factory.mktemp("demo-data")
    generate_range(str(root), "churn", DAYS[0], DAYS[1], rows=3000, files=3, parquet=True)
    train_model(str(root / "models" / "churn"), rows=4000)
    return root


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory) -> Path:
    """An Airflow home with a migrated SQLite metadata DB."""
    home = tmp_path_factory.mktemp("airflow-home")
    airflow(airflow_env(home), "db", "migrate")
    return home


@pytest.fixture(scope="session")
def sagemaker_stack(tmp_path_factory):
    """A moto S3 server and `airflow-bt local-sagemaker` (see tests/sagemaker_stack.py), for the session."""
    from sagemaker_stack import WAREHOUSE_BUCKET, Stack, local_sagemaker, moto_s3_server

    log = tmp_path_factory.mktemp("local-sagemaker") / "service.log"
    with moto_s3_server() as s3_url, local_sagemaker(s3_url, log) as (sagemaker_url, pid):
        stack = Stack(s3_url, sagemaker_url, log, pid, catalog_dir=tmp_path_factory.mktemp("catalog"))
        stack.client("s3").create_bucket(Bucket=WAREHOUSE_BUCKET)
        yield stack


@pytest.fixture
def pg_database():
    """A throw-away database on the local PostgreSQL; the test is skipped (reason printed) without one."""
    reason = postgres_unavailable_reason()
    if reason:
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    db = PostgresDatabase(f"airflow_bt_test_{uuid.uuid4().hex[:8]}")
    yield db
    db.drop()


