from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

# Tests never touch real AWS: fake credentials, and a region for botocore.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.pop("AWS_PROFILE", None)


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
