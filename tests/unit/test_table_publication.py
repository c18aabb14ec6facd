"""Publication as a table commit: an Iceberg snapshot per publication, following ``_LATEST.json`` forward only.

Each test runs on a SQL catalog on SQLite (Airflow 3's default footing; skipped where SQLAlchemy is 1.4, with
the reason) and on a Glue catalog against moto, with the day's Glue partition beside it.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import uuid
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_bt.steps.publish import publish_attempt
from airflow_bt.steps.shard import shard_partition
from airflow_bt.storage import for_uri, join_uri
from airflow_bt.tables.catalog import catalog_unavailable, default_catalog, load_catalog
from airflow_bt.tables.glue import GluePartitionPointer
from airflow_bt.tables.history import attempt_snapshots, day_state
from airflow_bt.tables.iceberg import PARTITION_COLUMN, IcebergTablePointer, TableCommitError
from airflow_bt.tables.sync import follow_latest

DAY = "2026-06-24"


class Footing:
    """A data root, a catalog and (on the Glue footing) a Glue partition pointer, for one test."""

    def __init__(self, tmp_path: Path, kind: str, s3_url: str = "") -> None:
        # moto keeps one state for every server of the process: names of this test's own
        token = uuid.uuid4().hex[:8]
        self.identifier = f"scoring_{token}.churn"
        self.base = tmp_path.as_uri() if kind != "glue-s3" else f"s3://bucket-{token}"
        if kind == "glue-s3":
            import boto3

            boto3.client("s3", endpoint_url=s3_url, region_name="us-east-1").create_bucket(Bucket=f"bucket-{token}")
        self.store = for_uri(self.base)
        self.kind = kind
        self.date_root = join_uri(self.base, "output/churn", f"dt={DAY}") + "/"
        self.latest_uri = join_uri(self.date_root, "_LATEST.json")
        if kind == "sql":
            self.properties = default_catalog(self.base) or {}
        elif kind == "glue":
            self.properties = {"type": "glue", "warehouse": f"{self.base}/warehouse", "glue.region": "us-east-1"}
        else:  # moto's server: Glue, and S3 for the parts and the warehouse (pyarrow's S3 client reads them)
            self.properties = {"type": "glue", "warehouse": f"{self.base}/warehouse", "glue.region": "us-east-1",
                               "glue.endpoint": s3_url, "glue.access-key-id": "testing",
                               "glue.secret-access-key": "testing", "s3.endpoint": s3_url, "s3.region": "us-east-1",
                               "s3.access-key-id": "testing", "s3.secret-access-key": "testing"}
        self.catalog = load_catalog(self.properties)
        self.glue: GluePartitionPointer | None = None
        if kind != "sql":
            import boto3

            client = boto3.client("glue", region_name="us-east-1", endpoint_url=s3_url or None)
            client.create_database(DatabaseInput={"Name": f"hive_{token}"})
            self.glue = GluePartitionPointer(client, f"hive_{token}", "churn")
        self.shards = 0

    def pointers(self) -> list:
        table = IcebergTablePointer(self.catalog, self.identifier)
        return [table, self.glue] if self.glue is not None else [table]

    def scored(self, rows: list[str], header: str = "id,x") -> tuple[dict, str]:
        """Shards of ``rows`` and their predictions (x / 10)."""
        self.shards += 1
        folder = f"{self.base}/in-{self.shards}"
        self.store.put_bytes(f"{folder}/a.csv", ("\n".join([header, *rows]) + "\n").encode())
        work = f"{self.base}/work/{self.shards}"
        summary = shard_partition(self.store, folder + "/", f"{work}/shard/", f"{work}/m", f"{work}/s.json",
                                  min_shards=2)
        for shard in summary["shards"]:
            lines = self.store.read_bytes(shard["uri"]).decode().splitlines()
            self.store.put_bytes(join_uri(work, "transform", shard["key"] + ".out"),
                                 "".join(f"{int(line.split(',')[1]) / 10}\n" for line in lines).encode())
        return summary, f"{work}/transform/"

    def publish(self, name: str, rows: list[str], header: str = "id,x", *, follow: bool = True) -> dict:
        summary, predictions = self.scored(rows, header)
        manifest = publish_attempt(self.store, summary, predictions, join_uri(self.date_root, name) + "/",
                                   self.latest_uri, prediction_columns=["p"], output_format="parquet",
                                   partition_column=(PARTITION_COLUMN, dt.date.fromisoformat(DAY)),
                                   metadata={"run_id": f"run-{name}", "try_number": 1, "job_name": f"job-{name}",
                                             "ds": DAY, "model": {"name": "churn-model"}})
        if follow:
            self.follow()
        return manifest

    def follow(self) -> dict:
        return follow_latest(self.store, self.latest_uri, DAY, self.pointers())

    def table(self):
        return self.catalog.load_table(self.identifier)

    def latest(self) -> str:
        return json.loads(self.store.read_bytes(self.latest_uri))["attempt_prefix"]

    def assert_pointers_agree(self) -> str:
        """``_LATEST.json``, the table's current snapshot and the Glue partition name one attempt; the day's rows
        in the table are that attempt's rows, once."""
        latest = self.latest()
        manifest = json.loads(self.store.read_bytes(join_uri(latest, "_manifest.json")))
        state = day_state(self.table(), DAY)
        assert IcebergTablePointer(self.catalog, self.identifier).current(DAY) == latest
        assert state["files"] == sorted(part["uri"] for part in manifest["parts"])
        assert state["rows"] == manifest["rows_out"]
        if self.glue is not None:
            assert self.glue.current(DAY) == latest
        return latest


@pytest.fixture(params=["sql", "glue", "glue-s3"])
def footing(request, tmp_path, monkeypatch):
    """``sql``: SQLite catalog, files; ``glue``: moto's Glue in process, files; ``glue-s3``: moto's server for
    Glue and S3 (the parts, the warehouse): what production runs, with pyarrow's own S3 client."""
    if request.param == "sql":
        reason = catalog_unavailable({"type": "sql"})
        if reason:
            pytest.skip(reason)
        yield Footing(tmp_path, "sql")
    elif request.param == "glue":
        from moto import mock_aws

        with mock_aws():
            yield Footing(tmp_path, "glue")
    else:
        from sagemaker_stack import moto_s3_server

        with moto_s3_server() as url:
            monkeypatch.setenv("AWS_ENDPOINT_URL_S3", url)  # our storage layer: boto3's standard configuration
            footing = Footing(tmp_path, "glue-s3", url)
            yield footing


def day_rows(table, snapshot_id=None) -> pa.Table:
    from pyiceberg.expressions import EqualTo

    rows = table.scan(row_filter=EqualTo(PARTITION_COLUMN, DAY), snapshot_id=snapshot_id).to_arrow()
    return rows.sort_by("id") if "id" in rows.column_names else rows


def test_each_publication_replaces_the_day_with_the_attempts_own_files_and_keeps_the_earlier_one(footing):
    first = footing.publish("run-a-1", [f"{i},{i}" for i in range(40)])
    second = footing.publish("run-b-1", [f"{i},{i * 2}" for i in range(40)])
    table = footing.table()
    assert footing.assert_pointers_agree() == second["attempt_prefix"]

    now = day_rows(table)
    assert now.num_rows == 40 and now["id"].to_pylist() == list(range(40))  # every row once
    assert now["p"].to_pylist() == [i * 2 / 10 for i in range(40)]
    assert set(now[PARTITION_COLUMN].to_pylist()) == {dt.date(2026, 6, 24)}
    # the snapshot before reads the first attempt (time travel), from the first attempt's own files
    current = table.current_snapshot()
    before = day_rows(table, current.parent_snapshot_id)
    assert before["p"].to_pylist() == [i / 10 for i in range(40)]
    assert attempt_snapshots(table) == {first["attempt_prefix"]: current.parent_snapshot_id,
                                        second["attempt_prefix"]: current.snapshot_id}
    summary = current.summary.additional_properties
    assert summary["airflow_bt.run_id"] == "run-run-b-1" and summary["airflow_bt.rows_out"] == "40"
    assert summary["airflow_bt.job_name"] == "job-run-b-1" and summary["airflow_bt.model"] == "churn-model"
    assert current.summary.operation.value == "overwrite"
    assert table.properties["gc.enabled"] == "false"
    # nothing was copied: the data root holds no Parquet file but the attempts' parts (the warehouse: metadata)
    stored = [o.key for o in footing.store.list(footing.base + "/")]
    assert [k for k in stored if k.endswith(".parquet") and not k.startswith("output/")] == []


def test_a_day_is_replaced_and_other_days_are_kept(footing):
    footing.publish("run-a-1", ["1,1", "2,2"])
    other = footing.date_root.replace(DAY, "2026-06-23")
    table = footing.table()
    assert len(table.snapshots()) == 1
    # an unrelated commit of another day between two publications of this one leaves this day alone
    footing.publish("run-b-1", ["1,3", "2,4", "3,5"])
    assert day_rows(footing.table()).num_rows == 3
    assert other not in json.dumps(day_state(footing.table(), DAY))


def test_a_publisher_that_completed_earlier_never_moves_the_table_back(footing):
    early = footing.publish("run-a-1", ["1,1"], follow=False)  # completed first; its publisher stalls here
    late = footing.publish("run-b-1", ["1,2", "2,2"])           # completed later, followed first
    assert footing.latest() == late["attempt_prefix"]
    footing.follow()  # the stalled publisher resumes
    assert footing.assert_pointers_agree() == late["attempt_prefix"]
    assert early["attempt_prefix"] not in json.dumps(day_state(footing.table(), DAY))
    # even asked directly, the sync leaves a pointer that names a later attempt where it is
    from airflow_bt.tables.sync import _move_one

    table_pointer = footing.pointers()[0]
    assert _move_one(footing.store, table_pointer, DAY, early["attempt_prefix"], early,
                     __import__("logging").getLogger()) == late["attempt_prefix"]


def test_a_publisher_killed_before_its_commit_is_repaired_by_the_retry(footing):
    footing.publish("run-a-1", ["1,1", "2,2"])
    footing.publish("run-a-2", ["1,1", "2,2", "3,3"], follow=False)  # SIGKILL after _LATEST.json, before commit
    assert day_state(footing.table(), DAY)["attempt_prefix"] != footing.latest()
    retry = footing.publish("run-a-3", ["1,1", "2,2", "3,3"])  # the task's retry publishes a new attempt
    assert footing.assert_pointers_agree() == retry["attempt_prefix"]
    assert day_rows(footing.table()).num_rows == 3


@pytest.mark.parametrize("kind", ["sql", "glue"])
@settings(max_examples=10)  # ~0.4 s an example (three publications, a catalog): a few seconds per footing
@given(schedule=st.lists(st.integers(0, 2), min_size=6, max_size=6))
def test_after_any_interleaving_every_pointer_names_the_attempt_that_completed_last(tmp_path_factory, kind,
                                                                                    schedule):
    """Three publishers of one day, each: publish (parts, _SUCCESS, _LATEST.json), then follow; interleaved."""
    reason = catalog_unavailable({"type": "sql"}) if kind == "sql" else None
    if reason:
        pytest.skip(reason)
    from moto import mock_aws

    with mock_aws():
        _interleave(Footing(tmp_path_factory.mktemp("interleave"), kind), schedule)


def _interleave(footing: Footing, schedule: list[int]) -> None:
    steps = {n: ["publish", "follow"] for n in range(3)}
    order = [n for n in schedule if steps[n] and steps[n].pop(0)] + [n for n in range(3) for _ in steps[n]]
    published: list[str] = []
    done = {n: 0 for n in range(3)}
    for n in order:
        if done[n] == 0:
            published.append(footing.publish(f"run-{n}-1", [f"{i},{n}" for i in range(n + 1)],
                                              follow=False)["attempt_prefix"])
        else:
            footing.follow()
        done[n] += 1
    assert footing.assert_pointers_agree() == published[-1]  # the one whose _SUCCESS was written last


def test_concurrent_publishers_commit_through_the_catalogs_optimistic_concurrency(footing):
    """Four threads publish four days at once: every commit lands (lost races are retried), one per day."""
    if footing.kind != "sql":
        pytest.skip("moto's Glue ignores UpdateTable's VersionId (the lock pyiceberg's Glue catalog commits with; "
                    "real Glue answers ConcurrentModificationException), so a race there loses a commit")
    days = ["2026-06-21", "2026-06-22", "2026-06-23", "2026-06-24"]
    summaries = [footing.scored([f"{i},{d}" for i in range(5)]) for d in range(4)]
    barrier, errors = threading.Barrier(4), []

    def publisher(index: int) -> None:
        day = days[index]
        date_root = join_uri(footing.base, "output/churn", f"dt={day}") + "/"
        try:
            summary, predictions = summaries[index]
            publish_attempt(footing.store, summary, predictions, join_uri(date_root, "run-1") + "/",
                            join_uri(date_root, "_LATEST.json"), prediction_columns=["p"], output_format="parquet",
                            partition_column=(PARTITION_COLUMN, dt.date.fromisoformat(day)))
            barrier.wait()
            follow_latest(footing.store, join_uri(date_root, "_LATEST.json"), day,
                          [IcebergTablePointer(load_catalog(footing.properties), footing.identifier)])
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=publisher, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    table = footing.table()
    for day in days:
        assert day_state(table, day)["rows"] == 5
    assert table.scan().to_arrow().num_rows == 20


def test_a_new_column_evolves_the_schema_and_a_changed_type_is_refused(footing):
    footing.publish("run-a-1", ["1,1"])
    footing.publish("run-b-1", ["1,1,x"], header="id,x,segment")
    table = footing.table()
    assert "segment" in table.schema().column_names
    summary = table.current_snapshot().summary.additional_properties
    assert summary["airflow_bt.schema_change"] == "added segment"
    assert day_rows(table)["segment"].to_pylist() == ["x"]
    with pytest.raises(TableCommitError, match=r"column 'segment' is string in the table but long"):
        footing.publish("run-c-1", ["1,1,7"], header="id,x,segment")


def test_csv_parts_or_a_missing_partition_column_cannot_be_registered(footing):
    summary, predictions = footing.scored(["1,1"])
    manifest = publish_attempt(footing.store, summary, predictions, join_uri(footing.date_root, "run-a-1") + "/",
                               footing.latest_uri, prediction_columns=["p"], output_format="parquet")
    with pytest.raises(TableCommitError, match="has no scored_date column"):
        IcebergTablePointer(footing.catalog, footing.identifier).move(DAY, manifest["attempt_prefix"], manifest,
                                                              expected=None)
    with pytest.raises(ValueError, match=r"publish\.table registers Parquet parts"):
        publish_attempt(footing.store, summary, predictions, join_uri(footing.date_root, "run-b-1") + "/",
                        footing.latest_uri, prediction_columns=["p"],
                        partition_column=(PARTITION_COLUMN, dt.date(2026, 6, 24)))


def test_an_empty_day_is_published_as_a_day_without_rows(footing):
    """A day with no input rows publishes an attempt without parts: the table's day is emptied (or the table is
    made from the manifest's schema), and the pointers still agree on that attempt."""
    empty = footing.publish("run-a-1", [])
    assert empty["parts"] == []
    table = footing.table()
    assert footing.assert_pointers_agree() == empty["attempt_prefix"]
    assert PARTITION_COLUMN in table.schema().column_names and day_rows(table).num_rows == 0
    full = footing.publish("run-b-1", ["1,1", "2,2"])
    assert footing.assert_pointers_agree() == full["attempt_prefix"]
    again = footing.publish("run-c-1", [])
    assert footing.assert_pointers_agree() == again["attempt_prefix"]
    assert day_rows(footing.table()).num_rows == 0
