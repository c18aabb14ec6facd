from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

# Tests never touch real AWS: fake credentials, and a region for botocore.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.pop("AWS_PROFILE", None)

# Property tests: `ci` (CI=true, as .ci/run has it) keeps each to a few seconds and derandomizes, so a
# CI failure reproduces; `dev` explores more. HYPOTHESIS_PROFILE picks one explicitly.
settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=60, deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


@pytest.fixture
def root_uri(tmp_path: Path) -> str:
    return tmp_path.as_uri()


@pytest.fixture
def s3_bucket():
    """A moto-mocked S3 bucket ``bucket-a``; yields ``s3://bucket-a``."""
    from moto import mock_aws

    with mock_aws():
        import boto3

        boto3.client("s3").create_bucket(Bucket="bucket-a")
        yield "s3://bucket-a"


@pytest.fixture
def glue_catalogs(tmp_path):
    """Glue (moto) for the Iceberg catalog and the Hive partitions: on both Airflow lines (the SQL catalog
    needs Airflow 3)."""
    from sagemaker_stack import moto_s3_server
    from table_checks import GlueCatalogs

    with moto_s3_server() as url:
        yield GlueCatalogs(url, tmp_path / "warehouse")
