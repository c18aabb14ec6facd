"""The Glue/Hive partition pointer (``publish.glue_table``) against moto's Glue."""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("moto", reason="moto (the test extra) is needed for a Glue catalog in-process")
from moto import mock_aws

from airflow_bt.tables.glue import GluePartitionPointer, GlueTableError, hive_type

ROOT = "s3://lake/scoring/output/churn/"
DAY = "2026-06-24"
A1 = f"{ROOT}dt={DAY}/manual-20260625T020000-aaaaaa-1/"
A2 = f"{ROOT}dt={DAY}/manual-20260625T020000-aaaaaa-2/"
A3 = f"{ROOT}dt={DAY}/scheduled-20260625T020000-bbbbbb-1/"

PARQUET_SCHEMA = [
    {"name": "customer_id", "type": "int64"},
    {"name": "Tenure", "type": "double"},
    {"name": "active", "type": "bool"},
    {"name": "signup", "type": "date32[day]"},
    {"name": "seen_at", "type": "timestamp[us, tz=UTC]"},
    {"name": "spend", "type": "decimal128(12, 2)"},
    {"name": "plan", "type": "string"},
    {"name": "churn_probability", "type": "double"},
]


def manifest(attempt: str, fmt: str = "parquet", schema: list[dict[str, str]] | None = None,
             columns: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    """What publish_attempt writes to ``_manifest.json``, as far as the pointer reads it."""
    if fmt == "parquet" and schema is None:
        schema = PARQUET_SCHEMA
    out: dict[str, Any] = {"attempt_prefix": attempt, "format": fmt, "rows_out": 3, "run_id": "manual__x",
                           "try_number": 1, "published_at": "2026-06-25T02:10:00Z", **extra}
    out["columns"] = columns if columns is not None else ([c["name"] for c in schema] if schema else None)
    if schema is not None:
        out["schema"] = schema
    return out


@pytest.fixture
def glue(monkeypatch: pytest.MonkeyPatch) -> Any:
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    import boto3

    with mock_aws():
        client = boto3.client("glue", region_name="us-east-1")
        client.create_database(DatabaseInput={"Name": "scoring"})
        yield client


def table_of(glue: Any, name: str = "churn") -> dict[str, Any]:
    return dict(glue.get_table(DatabaseName="scoring", Name=name)["Table"])


def partitions_of(glue: Any, name: str = "churn") -> list[dict[str, Any]]:
    return list(glue.get_partitions(DatabaseName="scoring", TableName=name)["Partitions"])


def test_a_parquet_attempt_creates_an_external_parquet_table_partitioned_by_dt(glue: Any) -> None:
    pointer = GluePartitionPointer(glue, "scoring", "churn")
    assert pointer.move(DAY, A1, manifest(A1), expected=None) is True

    table = table_of(glue)
    sd = table["StorageDescriptor"]
    assert table["TableType"] == "EXTERNAL_TABLE"
    assert table["Parameters"]["EXTERNAL"] == "TRUE"
    assert table["PartitionKeys"] == [{"Name": "dt", "Type": "string"}]
    assert sd["SerdeInfo"]["SerializationLibrary"] == "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
    assert sd["InputFormat"] == "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat"
    assert sd["Location"] == ROOT  # the model's output root, not an attempt
    assert [(c["Name"], c["Type"]) for c in sd["Columns"]] == [
        ("customer_id", "bigint"), ("tenure", "double"), ("active", "boolean"), ("signup", "date"),
        ("seen_at", "timestamp"), ("spend", "decimal(12,2)"), ("plan", "string"), ("churn_probability", "double"),
    ]
    assert "skip.header.line.count" not in table["Parameters"]
    [partition] = partitions_of(glue)
    assert partition["Values"] == [DAY]
    assert partition["StorageDescriptor"]["Location"] == A1
    assert partition["StorageDescriptor"]["SerdeInfo"] == sd["SerdeInfo"]
    assert partition["Parameters"]["airflow_bt.run_id"] == "manual__x"
    assert pointer.current(DAY) == A1


def test_a_csv_attempt_creates_an_opencsv_table_that_skips_each_parts_header(glue: Any) -> None:
    pointer = GluePartitionPointer(glue, "scoring", "churn_csv")
    attempt = A1.replace("/churn/", "/churn_csv/")
    m = manifest(attempt, "csv", columns=["customer_id", "tenure", "churn_probability"])
    assert pointer.move(DAY, attempt, m, expected=None) is True

    table = table_of(glue, "churn_csv")
    sd = table["StorageDescriptor"]
    assert sd["SerdeInfo"]["SerializationLibrary"] == "org.apache.hadoop.hive.serde2.OpenCSVSerde"
    assert sd["SerdeInfo"]["Parameters"]["separatorChar"] == ","
    assert sd["InputFormat"] == "org.apache.hadoop.mapred.TextInputFormat"
    assert table["Parameters"]["skip.header.line.count"] == "1"
    assert table["Parameters"]["classification"] == "csv"
    # OpenCSVSerde hands every value over as text: declaring other types would fail at query time
    assert [(c["Name"], c["Type"]) for c in sd["Columns"]] == [
        ("customer_id", "string"), ("tenure", "string"), ("churn_probability", "string")]
    assert sd["Location"] == "s3://lake/scoring/output/churn_csv/"
    assert partitions_of(glue, "churn_csv")[0]["StorageDescriptor"]["Location"] == attempt


def test_typed_json_lines_use_the_openx_serde_and_untyped_ones_are_refused(glue: Any) -> None:
    pointer = GluePartitionPointer(glue, "scoring", "churn_json")
    schema = [{"name": "id", "type": "int64"}, {"name": "at", "type": "timestamp[us]"}, {"name": "p", "type": "double"}]
    assert pointer.move(DAY, A1, manifest(A1, "jsonl", schema=schema), expected=None)
    sd = table_of(glue, "churn_json")["StorageDescriptor"]
    assert sd["SerdeInfo"]["SerializationLibrary"] == "org.openx.data.jsonserde.JsonSerDe"
    assert [(c["Name"], c["Type"]) for c in sd["Columns"]] == [("id", "bigint"), ("at", "string"), ("p", "double")]

    other = GluePartitionPointer(glue, "scoring", "churn_untyped")
    with pytest.raises(GlueTableError, match=r"publish\.glue_table.*scoring\.churn_untyped.*untyped jsonl"):
        other.move(DAY, A1, manifest(A1, "jsonl", schema=None), expected=None)
    assert [t["Name"] for t in glue.get_tables(DatabaseName="scoring")["TableList"]] == ["churn_json"]


def test_a_rerun_moves_the_partition_to_the_newer_attempt(glue: Any) -> None:
    pointer = GluePartitionPointer(glue, "scoring", "churn")
    assert pointer.move(DAY, A1, manifest(A1), expected=None)
    assert pointer.move(DAY, A2, manifest(A2, try_number=2), expected=pointer.current(DAY))
    [partition] = partitions_of(glue)  # still one partition for the day: the rows are read once
    assert partition["StorageDescriptor"]["Location"] == A2
    assert partition["Parameters"]["airflow_bt.try_number"] == "2"
    assert pointer.current(DAY) == A2
    # the same move again (a retried publish) is a no-op that reports success
    assert pointer.move(DAY, A2, manifest(A2), expected=A1) is True


def test_a_stale_expected_returns_false_and_writes_nothing(glue: Any) -> None:
    pointer = GluePartitionPointer(glue, "scoring", "churn")
    pointer.move(DAY, A1, manifest(A1), expected=None)
    pointer.move(DAY, A3, manifest(A3), expected=A1)
    before = partitions_of(glue)

    # a slower publisher decided when the partition still named A1 (or nothing): it must not move it back
    assert pointer.move(DAY, A2, manifest(A2), expected=A1) is False
    assert pointer.move(DAY, A2, manifest(A2), expected=None) is False
    wider = [*PARQUET_SCHEMA, {"name": "churn_reason", "type": "string"}]
    assert pointer.move(DAY, A2, manifest(A2, schema=wider), expected=A1) is False
    assert partitions_of(glue) == before
    assert len(table_of(glue)["StorageDescriptor"]["Columns"]) == len(PARQUET_SCHEMA)  # nor the table
    assert pointer.current(DAY) == A3


def test_a_partition_created_by_another_writer_in_the_window_is_not_overwritten(glue: Any) -> None:
    """CreatePartition answers AlreadyExists: move re-reads it and lets the caller decide again."""
    pointer = GluePartitionPointer(glue, "scoring", "churn")
    pointer.move("2026-06-23", A1.replace(DAY, "2026-06-23"), manifest(A1), expected=None)  # the table exists

    class Racing:  # both reads before the write miss; by the second, another writer created it at A3
        def __init__(self, real: Any) -> None:
            self.real, self.exceptions, self.reads = real, real.exceptions, 0

        def __getattr__(self, name: str) -> Any:
            return getattr(self.real, name)

        def get_partition(self, **kw: Any) -> Any:
            self.reads += 1
            if self.reads == 1:
                raise self.real.exceptions.EntityNotFoundException(
                    {"Error": {"Code": "EntityNotFoundException", "Message": "not yet"}}, "GetPartition")
            if self.reads == 2:
                self.real.create_partition(DatabaseName="scoring", TableName="churn", PartitionInput={
                    "Values": [DAY], "StorageDescriptor": {**table_of(self.real)["StorageDescriptor"], "Location": A3}})
                raise self.real.exceptions.EntityNotFoundException(
                    {"Error": {"Code": "EntityNotFoundException", "Message": "not yet"}}, "GetPartition")
            return self.real.get_partition(**kw)

    racing = GluePartitionPointer(Racing(glue), "scoring", "churn")
    assert racing.move(DAY, A2, manifest(A2), expected=None) is False
    assert racing.client.reads == 3  # CreatePartition answered AlreadyExists, and move read it again
    assert pointer.current(DAY) == A3


def test_a_refused_glue_call_is_an_error_naming_the_setting_the_table_and_the_call(glue: Any) -> None:
    pointer = GluePartitionPointer(glue, "scoring", "churn")
    pointer.move(DAY, A1, manifest(A1), expected=None)

    class Denied:  # the role may read the catalog but not write partitions
        def __init__(self, real: Any) -> None:
            self.real, self.exceptions = real, real.exceptions

        def __getattr__(self, name: str) -> Any:
            return getattr(self.real, name)

        def update_partition(self, **kw: Any) -> Any:
            raise self.real.exceptions.ClientError(
                {"Error": {"Code": "AccessDeniedException", "Message": "not authorized"}}, "UpdatePartition")

    with pytest.raises(GlueTableError) as caught:
        GluePartitionPointer(Denied(glue), "scoring", "churn").move(DAY, A2, manifest(A2), expected=A1)
    message = str(caught.value)
    assert message.startswith(f"publish.glue_table: Glue table scoring.churn partition dt={DAY}: UpdatePartition")
    assert "AccessDeniedException" in message
    assert pointer.current(DAY) == A1


def test_current_is_none_without_a_database_table_or_partition(glue: Any) -> None:
    assert GluePartitionPointer(glue, "nowhere", "churn").current(DAY) is None
    pointer = GluePartitionPointer(glue, "scoring", "churn")
    assert pointer.current(DAY) is None
    pointer.move(DAY, A1, manifest(A1), expected=None)
    assert pointer.current("2026-06-23") is None
    assert pointer.current(DAY) == A1


def test_a_location_without_a_trailing_slash_reads_back_as_the_attempt_prefix(glue: Any) -> None:
    pointer = GluePartitionPointer(glue, "scoring", "churn")
    pointer.move(DAY, A1, manifest(A1), expected=None)
    sd = partitions_of(glue)[0]["StorageDescriptor"]
    glue.update_partition(DatabaseName="scoring", TableName="churn", PartitionValueList=[DAY],
                          PartitionInput={"Values": [DAY], "StorageDescriptor": {**sd, "Location": A2.rstrip("/")}})
    assert pointer.current(DAY) == A2


def test_a_new_column_in_a_later_attempt_is_added_to_the_table(glue: Any, caplog: pytest.LogCaptureFixture) -> None:
    pointer = GluePartitionPointer(glue, "scoring", "churn")
    pointer.move(DAY, A1, manifest(A1), expected=None)
    wider = [*PARQUET_SCHEMA, {"name": "churn_reason", "type": "string"}]
    with caplog.at_level(logging.WARNING, logger="airflow_bt.tables.glue"):
        assert pointer.move(DAY, A2, manifest(A2, schema=wider), expected=A1)
    names = [c["Name"] for c in table_of(glue)["StorageDescriptor"]["Columns"]]
    assert names[-2:] == ["churn_probability", "churn_reason"] and len(names) == len(PARQUET_SCHEMA) + 1
    assert [c["Name"] for c in partitions_of(glue)[0]["StorageDescriptor"]["Columns"]] == names
    assert "added column(s) churn_reason string" in caplog.text
    # an attempt without the new column (Parquet is read by name) still fits; nothing is dropped
    assert pointer.move(DAY, A3, manifest(A3), expected=A2)
    assert [c["Name"] for c in table_of(glue)["StorageDescriptor"]["Columns"]] == names


def test_a_changed_column_type_fails_naming_the_column_and_both_types(glue: Any) -> None:
    pointer = GluePartitionPointer(glue, "scoring", "churn")
    pointer.move(DAY, A1, manifest(A1), expected=None)
    changed = [c if c["name"] != "churn_probability" else {**c, "type": "string"} for c in PARQUET_SCHEMA]
    with pytest.raises(GlueTableError) as caught:
        pointer.move(DAY, A2, manifest(A2, schema=changed), expected=A1)
    message = str(caught.value)
    assert "publish.glue_table" in message and "scoring.churn" in message
    assert "'churn_probability' is double in the table but string" in message
    assert pointer.current(DAY) == A1


def test_csv_columns_can_only_be_added_at_the_end(glue: Any) -> None:
    pointer = GluePartitionPointer(glue, "scoring", "churn")
    pointer.move(DAY, A1, manifest(A1, "csv", columns=["id", "x", "p"]), expected=None)
    assert pointer.move(DAY, A2, manifest(A2, "csv", columns=["id", "x", "p", "q"]), expected=A1)
    with pytest.raises(GlueTableError, match="read by position"):
        pointer.move(DAY, A3, manifest(A3, "csv", columns=["x", "id", "p", "q"]), expected=A2)
    with pytest.raises(GlueTableError, match="the table reads csv, but the attempt is parquet"):
        pointer.move(DAY, A3, manifest(A3), expected=A2)
    assert pointer.current(DAY) == A2


def test_a_missing_database_is_an_error_naming_the_setting(glue: Any) -> None:
    pointer = GluePartitionPointer(glue, "scorng", "churn")
    with pytest.raises(GlueTableError, match=r"publish\.glue_table\.database.*'scorng'|'scorng'.*glue_table\.database"):
        pointer.move(DAY, A1, manifest(A1), expected=None)
    assert [d["Name"] for d in glue.get_databases()["DatabaseList"]] == ["scoring"]  # not created


def test_an_attempt_of_another_day_is_refused(glue: Any) -> None:
    pointer = GluePartitionPointer(glue, "scoring", "churn")
    with pytest.raises(GlueTableError, match="not a folder of that day"):
        pointer.move("2026-06-23", A1, manifest(A1), expected=None)


def test_hive_types_of_pyarrow_names(caplog: pytest.LogCaptureFixture) -> None:
    assert hive_type("int32", "c") == "int"
    assert hive_type("timestamp[ns]", "c") == "timestamp"
    assert hive_type("decimal256(20, 4)", "c") == "decimal(20,4)"
    with caplog.at_level(logging.WARNING, logger="airflow_bt.tables.glue"):
        assert hive_type("list<item: int64>", "tags") == "string"
    assert "'tags'" in caplog.text and "list<item: int64>" in caplog.text


# ---- what an engine reads through the catalog ------------------------------------------------------------

def engine_rows(glue: Any, table_name: str) -> list[dict[str, Any]]:
    """Read the table as Athena/Hive do: each partition's location (files only; ``_``/``.`` names skipped),
    with the table's SerDe: Parquet columns by name (their file type must be the declared Hive type), CSV by
    position after ``skip.header.line.count`` lines of every file."""
    table = table_of(glue, table_name)
    sd = table["StorageDescriptor"]
    columns = [(c["Name"], c["Type"]) for c in sd["Columns"]]
    skip = int(table["Parameters"].get("skip.header.line.count", "0"))
    rows: list[dict[str, Any]] = []
    for partition in partitions_of(glue, table_name):
        location = partition["StorageDescriptor"]["Location"]
        assert location.endswith("/")
        folder = Path(location.removeprefix("file://"))
        files = [p for p in sorted(folder.rglob("*")) if p.is_file()
                 and not any(part.startswith(("_", ".")) for part in p.relative_to(folder).parts)]
        for path in files:
            if "Parquet" in sd["SerdeInfo"]["SerializationLibrary"]:
                import pyarrow.parquet as pq

                data = pq.read_table(path)
                got = {f.name.lower(): hive_type(str(f.type), f.name) for f in data.schema}
                assert all(got.get(name, hive) == hive for name, hive in columns), (got, columns)
                rows += [{k.lower(): v for k, v in r.items()} | {"dt": partition["Values"][0]}
                         for r in data.to_pylist()]
            else:
                lines = list(csv.reader(io.StringIO(path.read_text())))[skip:]
                rows += [dict(zip([n for n, _ in columns], line, strict=True)) | {"dt": partition["Values"][0]}
                         for line in lines]
    return rows


@pytest.mark.parametrize("output_format", [None, "parquet"])
def test_an_engine_reads_the_days_rows_once_from_the_latest_attempt(glue: Any, tmp_path: Path,
                                                                    output_format: str | None) -> None:
    """Two published attempts of a day (a rerun): the catalog leads an engine to the second one's rows, once."""
    if output_format == "parquet":
        pytest.importorskip("pyarrow", reason="pyarrow writes the Parquet parts")
    from airflow_bt.steps.publish import publish_attempt
    from airflow_bt.steps.shard import shard_partition
    from airflow_bt.storage import for_uri, join_uri

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.csv").write_text("id,x\n1,10\n2,20\n3,30\n")
    base = tmp_path.as_uri()
    store = for_uri(base)
    summary = shard_partition(store, f"{base}/in/", f"{base}/w/shard-1/", f"{base}/w/m", f"{base}/w/s.json",
                              min_shards=2)
    pointer = GluePartitionPointer(glue, "scoring", "churn")
    root = join_uri(base, "output/churn")
    for attempt, value in (("run-a-1", "0.25"), ("run-a-2", "0.75")):
        preds = join_uri(base, "w", attempt) + "/"
        for shard in summary["shards"]:
            lines = store.read_bytes(shard["uri"]).decode().splitlines()
            store.put_bytes(join_uri(preds, shard["key"] + ".out"), "".join(f"{value}\n" for _ in lines).encode())
        prefix = join_uri(root, f"dt={DAY}", attempt) + "/"
        published = publish_attempt(store, summary, preds, prefix, join_uri(root, f"dt={DAY}", "_LATEST.json"),
                                    prediction_columns=["p"], output_format=output_format)
        assert pointer.move(DAY, prefix, published, expected=pointer.current(DAY))

    assert table_of(glue)["StorageDescriptor"]["Location"] == root + "/"
    assert pointer.current(DAY) == join_uri(root, f"dt={DAY}", "run-a-2") + "/"
    rows = engine_rows(glue, "churn")
    assert sorted(str(r["id"]) for r in rows) == ["1", "2", "3"]  # once each: not every attempt of the day
    assert {float(r["p"]) for r in rows} == {0.75}  # the rerun's predictions
    assert {r["dt"] for r in rows} == {DAY}
