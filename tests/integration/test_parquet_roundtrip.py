"""A Parquet partition through the three steps (shard, the local engine, publish) into typed Parquet parts.

The promise: the published rows equal the input rows one to one, in order, with their original types,
plus one typed column per declared prediction; an engine pointed at the attempt reads just those rows.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from engine_helpers import handler_model, inline_handler, transform_request

from airflow_bt.steps.layout import RunLayout
from airflow_bt.steps.publish import publish_attempt
from airflow_bt.steps.shard import shard_partition
from airflow_bt.storage import for_uri
from airflow_bt.transform.local_engine import run_transform_job

pytestmark = pytest.mark.integration
#: The Done-when figure; AIRFLOW_BT_PARQUET_ROWS makes a quick local run smaller.
ROWS = int(os.environ.get("AIRFLOW_BT_PARQUET_ROWS", "2000000"))
FILES = 4

#: Predicts from the first CSV field (the ``id`` column): ``score`` = id / 2, ``label`` = id % 7, so every
#: published row shows whether its prediction is its own.
ID_HANDLER = """
def model_fn(model_dir):
    return None


def input_fn(body, content_type):
    return [int(line.split(b",", 1)[0]) for line in body.splitlines()]


def predict_fn(ids, model):
    return ids


def output_fn(ids, accept):
    return "".join(f"{i / 2},{i % 7}\\n" for i in ids)
"""

TEXTS = ["plain", "comma, inside", 'a "quoted" word', "", "ünïcode ✓", "trailing space "]
NOTES = ["first line\nsecond line", "carriage\r\nreturn", "no break", "", "tab\tand, comma"]


def partition(rows: int) -> pa.Table:
    """``rows`` rows: an int id, strings with commas/quotes/newlines, nulls, a timestamp and a decimal column."""
    ids = np.arange(rows, dtype=np.int64)
    every = lambda n: pa.array(ids % n == 0)  # noqa: E731 - a mask of every n-th row
    cents = (ids * 7919) % 10_000_019
    return pa.table({
        "id": pa.array(ids),
        "text": pc.if_else(every(11), pa.scalar(None, pa.string()),
                           pc.take(pa.array(TEXTS), pa.array(ids % len(TEXTS)))),
        "seen_at": pc.if_else(every(13), pa.scalar(None, pa.timestamp("us", tz="UTC")),
                              pa.array(1_750_000_000_000_000 + ids * 1_000_003, pa.timestamp("us", tz="UTC"))),
        "amount": pc.if_else(every(17), pa.scalar(None, pa.decimal128(12, 2)),
                             pa.array(cents / 100.0).cast(pa.decimal128(12, 2), safe=False)),
        "ratio": pc.if_else(every(19), pa.scalar(None, pa.float64()), pa.array(ids / 3.0)),
        "note": pc.take(pa.array(NOTES), pa.array(ids % len(NOTES))),  # line breaks: published, never sent
    })


def write_partition(folder: Path, table: pa.Table, files: int) -> None:
    folder.mkdir(parents=True)
    bounds = np.linspace(0, table.num_rows, files + 1).astype(int)
    for index, (start, end) in enumerate(itertools.pairwise(bounds)):
        pq.write_table(table.slice(start, end - start), folder / f"part-{index:04d}.parquet",
                       row_group_size=150_000, compression="snappy")


def run_pipeline(tmp_path: Path, inp: Path, **publish: Any) -> dict[str, Any]:
    base = tmp_path.as_uri()
    store = for_uri(base)
    layout = RunLayout(work_root=f"{base}/work/dt=1/", output_root=f"{base}/output/dt=1/", slug="run")
    summary = shard_partition(store, inp.as_uri() + "/", layout.step_prefix("shard", 1),
                              layout.step_file("shard", 1, ".manifest"), layout.step_file("shard", 1, ".json"),
                              columns=["id", "text", "seen_at", "amount", "ratio"], target_shard_mb=8, min_shards=3)
    model = handler_model(inline_handler(tmp_path, "ids", ID_HANDLER))
    out = layout.step_prefix("transform", 1)
    run_transform_job(transform_request(summary["manifest_uri"], out, S3DataType="ManifestFile",
                                        InstanceCount=2, BatchStrategy="MultiRecord", MaxPayloadInMB=6), model)
    return publish_attempt(store, summary, out, layout.attempt_prefix(1), layout.latest_uri,
                           prediction_columns=["score", "label"],
                           prediction_types={"label": "int64"}, **publish)


def test_a_parquet_partition_publishes_its_rows_typed_one_to_one_with_typed_predictions(tmp_path: Path) -> None:
    table = partition(ROWS)
    write_partition(tmp_path / "in", table, FILES)

    manifest = run_pipeline(tmp_path, tmp_path / "in", output_format="parquet")

    attempt = Path(manifest["attempt_prefix"].removeprefix("file://"))
    parts = [Path(p["uri"].removeprefix("file://")) for p in manifest["parts"]]
    assert len(parts) >= 3 and all(p.suffix == ".parquet" for p in parts)
    published = pa.concat_tables(pq.read_table(p, partitioning=None) for p in parts)  # part order: input order
    assert published.schema == table.schema.append(pa.field("score", pa.float64())).append(
        pa.field("label", pa.int64()))
    assert published.num_rows == ROWS == manifest["rows_out"]
    assert published.select(table.column_names).equals(table)
    ids = table.column("id").to_numpy()
    np.testing.assert_array_equal(published.column("score").to_numpy(), ids / 2)
    np.testing.assert_array_equal(published.column("label").to_numpy(), ids % 7)
    assert manifest["format"] == "parquet" and manifest["schema_source"] == "parquet"
    assert [f["name"] for f in manifest["schema"]] == [*table.column_names, "score", "label"]
    # an engine pointed at the attempt reads the rows and nothing else (_manifest.json, _SUCCESS are skipped)
    assert pads.dataset(attempt, format="parquet").count_rows() == ROWS
    groups = [pq.ParquetFile(p).metadata.row_group(0).num_rows for p in parts]
    assert max(groups) <= 128 * 1024 and min(groups) > 1000


def test_a_parquet_partition_publishes_csv_with_every_value_as_written(tmp_path: Path) -> None:
    import pyarrow.csv as pacsv

    table = partition(20_000)
    write_partition(tmp_path / "in", table, 3)

    manifest = run_pipeline(tmp_path, tmp_path / "in", output_format="csv")

    parts = [p["uri"].removeprefix("file://") for p in manifest["parts"]]
    assert all(p.endswith(".csv") for p in parts)
    schema = table.schema.append(pa.field("score", pa.float64())).append(pa.field("label", pa.int64()))
    read = pa.concat_tables(pacsv.read_csv(p, convert_options=pacsv.ConvertOptions(
        column_types=schema, strings_can_be_null=False, quoted_strings_can_be_null=False)) for p in parts)
    # a CSV has no null string: the null texts come back empty, the rest as written (commas, quotes, newlines)
    expected = table.set_column(1, "text", pc.fill_null(table.column("text"), ""))
    assert read.select(table.column_names).equals(expected)
    np.testing.assert_array_equal(read.column("label").to_numpy(), table.column("id").to_numpy() % 7)
