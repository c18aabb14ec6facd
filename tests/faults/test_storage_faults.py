"""Storage faults: S3 answering a share of requests with 5xx, throttling, or a lost response.

The pipeline's pure steps (shard, the local engine, publish) run over ``s3://`` through
:mod:`faults.s3_fault_proxy` in front of a moto server, once clean and once with faults on a
fixed schedule; what they publish must be identical. The lost response matters most: a
create-only PUT that succeeded but whose answer was lost is retried by botocore and meets its
own object (412), which must count as success -- while a different object there is still a
collision.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from engine_helpers import handler_model, model_tarball, transform_request

from airflow_bt.steps.publish import publish_attempt, read_latest
from airflow_bt.steps.shard import shard_partition
from airflow_bt.storage import ObjectExistsError, for_uri, join_uri
from airflow_bt.storage.s3 import S3Storage
from airflow_bt.transform.local_engine import run_transform_job

from .s3_fault_proxy import (
    FAULT_KINDS,
    INTERNAL_ERROR,
    LOST_RESPONSE,
    S3FaultProxy,
    moto_server,
    running,
)

DT = "dt=2026-06-24"
#: Fields of the summary and the manifest that measure time; everything else must match.
TIMINGS = {"seconds", "publish_seconds", "published_at", "completed_at"}
log = logging.getLogger(__name__)


@pytest.fixture(scope="module")
def moto() -> Iterator[tuple[str, int]]:
    """One moto server for the module (buckets keep tests apart); its access log kept out of reports."""
    access_log = logging.getLogger("werkzeug")
    level = access_log.level
    access_log.setLevel(logging.WARNING)
    try:
        with moto_server() as address:
            yield address
    finally:
        access_log.setLevel(level)


@pytest.fixture
def direct(moto: tuple[str, int]) -> Any:
    """A boto3 client that talks to moto itself, never through the proxy (setup and checks)."""
    import boto3

    return boto3.client("s3", endpoint_url=f"http://{moto[0]}:{moto[1]}")


@pytest.fixture(autouse=True)
def _no_caller_retry_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing in the environment configures retries, so S3Storage's own budget applies."""
    for name in ("AWS_RETRY_MODE", "AWS_MAX_ATTEMPTS", "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


def through(proxy: S3FaultProxy, monkeypatch: pytest.MonkeyPatch) -> None:
    """Send every boto3 client made from now on (``aws_conn_id=None``) through ``proxy``."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.url)


def make_input(direct: Any, bucket: str) -> None:
    """Two CSV objects with one header, 3000 rows: the upstream-owned partition."""
    direct.create_bucket(Bucket=bucket)
    rows = [f"{i},{i % 97},{(i * 7) % 13}" for i in range(3000)]
    for n, chunk in enumerate((rows[:1700], rows[1700:]), start=1):
        body = "\n".join(["id,a,b", *chunk]) + "\n"
        direct.put_object(Bucket=bucket, Key=f"input/{DT}/customers-{n:04d}.csv", Body=body.encode())


def run_pipeline(bucket: str, model: dict[str, Any]) -> dict[str, Any]:
    """shard -> local transform -> publish for ``s3://bucket``, as the nightly DAG chains them."""
    root = f"s3://{bucket}"
    store = for_uri(root, aws_conn_id=None)
    work = f"{root}/work/churn/{DT}/run-1"
    summary = shard_partition(store, f"{root}/input/{DT}/", f"{work}/shard-1/", f"{work}/shard-1.manifest",
                              f"{work}/shard-1.json", min_shards=8)
    request = transform_request(f"{work}/shard-1.manifest", f"{work}/transform-1/", S3DataType="ManifestFile",
                                TransformJobName="fault-job")
    result = run_transform_job(request, model, aws_conn_id=None, log=log)
    assert result["TransformJobStatus"] == "Completed", result.get("FailureReason")
    return publish_attempt(store, summary, f"{work}/transform-1/", f"{root}/output/churn/{DT}/run-1-1/",
                           f"{root}/output/churn/{DT}/_LATEST.json", prediction_columns=["score"],
                           metadata={"run_id": "run-1", "try_number": 1})


def snapshot(direct: Any, bucket: str) -> dict[str, Any]:
    """Every object the pipeline wrote (key -> bytes); JSON documents parsed, timings dropped,
    the bucket name replaced, so two runs in two buckets compare equal when they did the same."""
    found: dict[str, Any] = {}
    for page in direct.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            key = obj["Key"]
            if key.startswith("input/"):
                continue
            data = direct.get_object(Bucket=bucket, Key=key)["Body"].read()
            if key.endswith((".json", ".manifest")):
                doc = json.loads(data.decode().replace(f"s3://{bucket}/", "s3://BUCKET/"))
                found[key] = {k: v for k, v in doc.items() if k not in TIMINGS} if isinstance(doc, dict) else doc
            else:
                found[key] = data
    return found


def test_pipeline_over_faulty_s3_publishes_what_a_clean_run_does(
        moto: tuple[str, int], direct: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Half the first attempts of each method fail (each fault kind in turn, and bursts of four
    InternalErrors); every one is retried and the published result is the clean run's, byte for byte."""
    model = handler_model(model_tarball(tmp_path, "rowsum"))
    make_input(direct, "clean-run")
    make_input(direct, "fault-run")

    with running(moto, pattern=()) as clean_proxy:
        through(clean_proxy, monkeypatch)
        clean_manifest = run_pipeline("clean-run", model)
    with running(moto) as proxy:
        through(proxy, monkeypatch)
        manifest = run_pipeline("fault-run", model)

    clean, faulty = snapshot(direct, "clean-run"), snapshot(direct, "fault-run")
    parts = sorted(k for k in faulty if k.startswith("output/") and k.endswith(".csv"))
    assert len(parts) == 8 and len(faulty) == len(clean) == 3 * 8 + 5  # shards, .out, parts; 5 documents
    assert faulty == clean
    assert manifest["rows_out"] == clean_manifest["rows_out"] == 3000
    rows = [line for key in parts for line in faulty[key].decode().splitlines()[1:]]
    assert rows[:2] == ["0,0,0,0", "1,1,7,9"] and len(rows) == 3000  # id,a,b,score=a+b+id

    fault_root = f"s3://fault-run/output/churn/{DT}"
    latest = read_latest(S3Storage(aws_conn_id=None, client_kwargs={"endpoint_url": direct.meta.endpoint_url}),
                         fault_root)
    assert latest is not None and latest["attempt_prefix"] == f"{fault_root}/run-1-1/"
    assert direct.head_object(Bucket="fault-run", Key=f"output/churn/{DT}/run-1-1/_SUCCESS")["ContentLength"] == 0

    # The faults really happened, of every kind, and each one was retried rather than given up on.
    counts = proxy.counts()
    assert all(counts[kind] >= 3 for kind in FAULT_KINDS), counts
    lost_puts = proxy.faults(LOST_RESPONSE, "PUT", create_only=True)
    assert len(lost_puts) >= 2 and {f.upstream_status for f in lost_puts} == {200}  # moto stored them
    assert any(f.attempt == 4 for f in proxy.faults(INTERNAL_ERROR))  # a burst beyond botocore's default 3
    assert proxy.retries == len(proxy.faults())
    assert clean_proxy.faults() == [] and clean_proxy.retries == 0
    log.info("fault run: %s faults in %s requests: %s", len(proxy.faults()), sum(proxy.requests.values()), counts)


def test_lost_response_to_a_create_only_put_is_not_a_collision(
        moto: tuple[str, int], direct: Any) -> None:
    """The PUT lands, its answer is lost, the retry gets 412 for our own object: that is success."""
    direct.create_bucket(Bucket="lost-put")
    with running(moto, pattern=(LOST_RESPONSE,), methods={"PUT"}) as proxy:
        store = S3Storage(aws_conn_id=None, client_kwargs={"endpoint_url": proxy.url})
        store.put_bytes("s3://lost-put/part-00000.csv", b"1,2,3\n")
        with store.open_write("s3://lost-put/big.bin") as out:  # a spooled write, same path
            out.write(b"x" * 100_000)
    assert [(f.kind, f.upstream_status) for f in proxy.faults()] == [(LOST_RESPONSE, 200)] * 2
    assert proxy.requests["PUT"] == 4  # each PUT once more, answered 412 by moto
    assert direct.get_object(Bucket="lost-put", Key="part-00000.csv")["Body"].read() == b"1,2,3\n"
    assert direct.head_object(Bucket="lost-put", Key="big.bin")["ContentLength"] == 100_000


@pytest.mark.parametrize("existing", [b"first!", b"other content"], ids=["same-size", "other-size"])
def test_a_different_object_is_still_a_collision_after_a_retry(
        moto: tuple[str, int], direct: Any, existing: bytes) -> None:
    """A retried create-only PUT that meets someone else's bytes raises and leaves them alone."""
    direct.create_bucket(Bucket="collide")
    direct.put_object(Bucket="collide", Key="obj", Body=existing)
    with running(moto, pattern=(INTERNAL_ERROR,), methods={"PUT"}) as proxy:
        store = S3Storage(aws_conn_id=None, client_kwargs={"endpoint_url": proxy.url})
        with pytest.raises(ObjectExistsError, match="already exists"):
            store.put_bytes("s3://collide/obj", b"second")
    assert proxy.retries == 1  # the 412 came from a retry, so the content was compared
    assert direct.get_object(Bucket="collide", Key="obj")["Body"].read() == existing
    direct.delete_object(Bucket="collide", Key="obj")
    direct.delete_bucket(Bucket="collide")


def test_same_bytes_under_another_kind_of_etag_are_recognised(moto: tuple[str, int], direct: Any) -> None:
    """When the ETag is not the MD5 (multipart, SSE-KMS), a retried PUT reads the object back to compare."""
    direct.create_bucket(Bucket="read-back")
    upload = direct.create_multipart_upload(Bucket="read-back", Key="obj")
    etag = direct.upload_part(Bucket="read-back", Key="obj", UploadId=upload["UploadId"], PartNumber=1,
                              Body=b"same bytes")["ETag"]
    direct.complete_multipart_upload(Bucket="read-back", Key="obj", UploadId=upload["UploadId"],
                                     MultipartUpload={"Parts": [{"ETag": etag, "PartNumber": 1}]})
    with running(moto, pattern=(INTERNAL_ERROR,), methods={"PUT"}) as proxy:
        store = S3Storage(aws_conn_id=None, client_kwargs={"endpoint_url": proxy.url})
        store.put_bytes("s3://read-back/obj", b"same bytes")
    assert direct.head_object(Bucket="read-back", Key="obj")["ETag"].endswith('-1"')  # still the first object
    assert proxy.retries == 1 and proxy.requests["GET"] == 1  # it was read back, once


def test_identical_object_without_a_retry_is_still_a_collision(moto: tuple[str, int], direct: Any) -> None:
    """Only a retry can have written the object: writing the same bytes twice is still an error."""
    direct.create_bucket(Bucket="twice")
    with running(moto, pattern=()) as proxy:
        store = S3Storage(aws_conn_id=None, client_kwargs={"endpoint_url": proxy.url})
        store.put_bytes("s3://twice/_SUCCESS", b"")
        with pytest.raises(ObjectExistsError):
            store.put_bytes("s3://twice/_SUCCESS", b"")


def test_caller_configured_retries_win(moto: tuple[str, int], direct: Any,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A retry budget set in the client's Config or in AWS_MAX_ATTEMPTS is used as is."""
    from botocore.config import Config
    from botocore.exceptions import ClientError

    direct.create_bucket(Bucket="budget")
    burst = [(INTERNAL_ERROR, 4)]
    with running(moto, pattern=burst) as proxy:
        config = Config(retries={"mode": "standard", "total_max_attempts": 2})
        store = S3Storage(aws_conn_id=None, client_kwargs={"endpoint_url": proxy.url, "config": config})
        with pytest.raises(ClientError, match="InternalError"):
            store.put_bytes("s3://budget/a", b"a")
        assert proxy.requests["PUT"] == 2
    with running(moto, pattern=burst) as proxy:
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", "3")
        store = S3Storage(aws_conn_id=None, client_kwargs={"endpoint_url": proxy.url})
        with pytest.raises(ClientError, match="InternalError"):
            store.put_bytes("s3://budget/b", b"b")
        assert proxy.requests["PUT"] == 3
    assert "Contents" not in direct.list_objects_v2(Bucket="budget")


def test_airflow_connection_gets_the_retry_budget_too(moto: tuple[str, int], direct: Any,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Through S3Hook (an Airflow connection without retry settings) a burst of four 500s is survived."""
    direct.create_bucket(Bucket="hook-path")
    with running(moto, pattern=[(INTERNAL_ERROR, 4)]) as proxy:
        monkeypatch.setenv("AIRFLOW_CONN_FAULTY_S3",
                           json.dumps({"conn_type": "aws", "extra": {"endpoint_url": proxy.url}}))
        store = S3Storage(aws_conn_id="faulty_s3")
        store.put_bytes(join_uri("s3://hook-path", "x.csv"), b"1\n")
        assert store.read_bytes("s3://hook-path/x.csv") == b"1\n"
    assert proxy.counts()[INTERNAL_ERROR] == 8 and proxy.retries == 8  # PUT and GET each failed 4 times
