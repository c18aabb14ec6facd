"""Parquet in and typed parts out, step by step on small partitions: what a user who gets it wrong is told,
and (a property) that published rows equal input rows whatever the values."""

from __future__ import annotations

import itertools
import json
import string
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from engine_helpers import handler_model, inline_handler, transform_request
from hypothesis import given
from hypothesis import strategies as st

from airflow_bt.steps.layout import RunLayout
from airflow_bt.steps.predictions import ReconcileError
from airflow_bt.steps.publish import publish_attempt
from airflow_bt.steps.shard import shard_partition
from airflow_bt.steps.shard.common import ShardInputError
from airflow_bt.storage import for_uri
from airflow_bt.transform.local_engine import run_transform_job

#: Predicts from the ``id`` field of each record (first CSV field, or the JSON object's key): ``score`` =
#: id / 2 and ``label`` = id % 7, so a published row shows whether its prediction is its own.
ID_HANDLER = """
import json

def model_fn(model_dir):
    return None

def input_fn(body, content_type):
    lines = body.splitlines()
    if "json" in content_type:
        return [int(json.loads(line)["id"]) for line in lines]
    return [int(line.split(b",", 1)[0]) for line in lines]

def predict_fn(ids, model):
    return ids

def output_fn(ids, accept):
    return "".join(f"{i / 2},{i % 7}\\n" for i in ids)
"""


def shard(tmp_path: Path, inp: Path, **options: Any) -> dict[str, Any]:
    base = tmp_path.as_uri()
    layout = RunLayout(work_root=f"{base}/work/", output_root=f"{base}/output/", slug="run")
    return shard_partition(for_uri(base), inp.as_uri() + "/", layout.step_prefix("shard", 1),
                           layout.step_file("shard", 1, ".manifest"), layout.step_file("shard", 1, ".json"),
                           **options)


def score_and_publish(tmp_path: Path, summary: dict[str, Any], **publish: Any) -> dict[str, Any]:
    base = tmp_path.as_uri()
    layout = RunLayout(work_root=f"{base}/work/", output_root=f"{base}/output/", slug="run")
    model = handler_model(inline_handler(tmp_path, "ids", ID_HANDLER))
    out = layout.step_prefix("transform", 1)
    if summary["shards"]:  # as the operator does: no job for an empty partition
        description = run_transform_job(transform_request(
            summary["manifest_uri"], out, S3DataType="ManifestFile", ContentType=summary["content_type"],
            BatchStrategy="MultiRecord"), model)
        assert description["TransformJobStatus"] == "Completed", description.get("FailureReason")
    return publish_attempt(for_uri(base), summary, out, layout.attempt_prefix(1), layout.latest_uri,
                           prediction_columns=["score", "label"], **publish)


def published(manifest: dict[str, Any]) -> pa.Table:
    return pa.concat_tables(pq.read_table(p["uri"].removeprefix("file://")) for p in manifest["parts"])


def write(folder: Path, *tables: pa.Table) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for index, table in enumerate(tables):
        pq.write_table(table, folder / f"part-{index:04d}.parquet")
    return folder


def rows(n: int, start: int = 0) -> pa.Table:
    return pa.table({"id": pa.array(range(start, start + n), pa.int64()),
                     "name": pa.array([f"n{i}, \"q\"" for i in range(start, start + n)]),
                     "x": pa.array([i / 4 for i in range(start, start + n)])})


def test_files_of_one_partition_with_different_schemas_fail_naming_both_and_the_field(tmp_path: Path) -> None:
    other = rows(3, 3).set_column(2, "x", pa.array(["a", "b", "c"]))
    inp = write(tmp_path / "in", rows(3), other)
    with pytest.raises(ShardInputError) as info:
        shard(tmp_path, inp)
    message = str(info.value)
    assert "part-0001.parquet: its schema differs from" in message and "part-0000.parquet" in message
    assert "'x' is string here but double there" in message


def test_input_columns_choose_and_order_what_the_model_is_sent(tmp_path: Path) -> None:
    inp = write(tmp_path / "in", rows(4))
    summary = shard(tmp_path, inp, columns=["id", "x"])
    text = Path(summary["shards"][0]["uri"].removeprefix("file://")).read_text()
    assert text.splitlines() == ["0,0", "1,0.25", "2,0.5", "3,0.75"]  # no header, no name column
    manifest = score_and_publish(tmp_path, summary, output_format="parquet")
    table = published(manifest)
    assert table.select(["id", "name", "x"]).equals(rows(4))  # every column is still published
    assert manifest["columns_sent"] == ["id", "x"]
    with pytest.raises(ShardInputError, match=r"input.columns names \['height'\].*its columns are"):
        shard(tmp_path / "again", inp, columns=["id", "height"])


def test_a_line_break_in_a_sent_column_fails_the_csv_shard_and_travels_in_json_lines(tmp_path: Path) -> None:
    table = pa.table({"id": pa.array([1, 2, 3], pa.int64()), "note": ["one", "two\nlines", "three"]})
    inp = write(tmp_path / "in", table)
    with pytest.raises(ShardInputError, match=r"row 2: column 'note' holds a line break") as info:
        shard(tmp_path / "csv", inp)
    assert "input.columns" in str(info.value) and "jsonl" in str(info.value)
    summary = shard(tmp_path / "jsonl", inp, shard_format="jsonl")
    assert summary["content_type"] == "application/jsonlines"
    out = published(score_and_publish(tmp_path / "jsonl", summary, output_format="parquet"))
    assert out.select(["id", "note"]).equals(table)
    assert out.column("label").to_pylist() == [1, 2, 3]  # float64 by default: id % 7


def test_csv_input_publishes_typed_parquet_with_declared_and_inferred_types(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.csv").write_text("id,day,code,amount\n1,2026-06-24,007,1.50\n2,2026-06-25,010,2.25\n")
    summary = shard(tmp_path, tmp_path / "in")
    manifest = score_and_publish(tmp_path, summary, output_format="parquet",
                                 schema={"code": "string", "amount": "decimal128(6, 2)"},
                                 prediction_types={"label": "int32"})
    table = published(manifest)
    assert table.schema.field("code").type == pa.string() and table.column("code").to_pylist() == ["007", "010"]
    assert str(table.schema.field("amount").type) == "decimal128(6, 2)"
    assert table.schema.field("day").type == pa.date32()  # inferred from the first shard
    assert table.schema.field("label").type == pa.int32() and table.column("label").to_pylist() == [1, 2]
    assert manifest["schema_source"] == "postprocess.schema + inferred"
    assert {f["name"]: f["type"] for f in manifest["schema"]}["amount"] == "decimal128(6, 2)"


def test_a_prediction_that_does_not_fit_its_declared_type_publishes_nothing(tmp_path: Path) -> None:
    summary = shard(tmp_path, write(tmp_path / "in", rows(5)))
    with pytest.raises(ReconcileError, match=r"does not fit its declared type \(postprocess.prediction_types\)"):
        score_and_publish(tmp_path, summary, output_format="parquet", prediction_types={"score": "int64"})
    assert not list((tmp_path / "output").rglob("_SUCCESS"))


def test_parquet_input_publishes_json_lines_with_exact_decimals(tmp_path: Path) -> None:
    table = pa.table({"id": pa.array([1, 2], pa.int64()),
                      "price": pa.array(["12.30", "0.01"]).cast(pa.decimal128(8, 2)),
                      "day": pa.array([19000, None], pa.date32())})
    manifest = score_and_publish(tmp_path, shard(tmp_path, write(tmp_path / "in", table)), output_format="jsonl")
    lines = [json.loads(line) for p in manifest["parts"]
             for line in Path(p["uri"].removeprefix("file://")).read_text().splitlines()]
    assert lines == [{"id": 1, "price": "12.30", "day": "2022-01-08", "score": 0.5, "label": 1.0},
                     {"id": 2, "price": "0.01", "day": None, "score": 1.0, "label": 2.0}]


_TEXT = st.text(alphabet=string.ascii_letters + ' ,"\'\\;é✓', max_size=12)


@given(data=st.lists(st.tuples(st.none() | _TEXT, st.none() | st.floats(allow_nan=False, width=32),
                               st.none() | st.integers(-(2**40), 2**40)), max_size=40),
       files=st.integers(1, 3), jsonl=st.booleans())
def test_published_rows_equal_input_rows(tmp_path_factory: pytest.TempPathFactory, data: list[tuple[Any, ...]],
                                         files: int, jsonl: bool) -> None:
    """Whatever the strings (commas, quotes, backslashes), nulls and numbers: the published Parquet rows are
    the input rows, in order, with their types, each with its own prediction."""
    tmp_path = tmp_path_factory.mktemp("prop")
    table = pa.table({"id": pa.array(range(len(data)), pa.int64()),
                      "text": pa.array([d[0] for d in data], pa.string()),
                      "ratio": pa.array([d[1] for d in data], pa.float32()),
                      "count": pa.array([d[2] for d in data], pa.int64())})
    cut = [round(len(data) * k / files) for k in range(files + 1)]
    inp = write(tmp_path / "in", *(table.slice(a, b - a) for a, b in itertools.pairwise(cut)))
    summary = shard(tmp_path, inp, shard_format="jsonl" if jsonl else "csv", min_shards=2)
    manifest = score_and_publish(tmp_path, summary, output_format="parquet", prediction_types={"label": "int64"})
    out = published(manifest) if manifest["parts"] else table.schema.empty_table()
    assert manifest["rows_out"] == len(data)
    assert out.select(table.column_names).equals(table)
    if data:
        assert out.column("label").to_pylist() == [i % 7 for i in range(len(data))]
