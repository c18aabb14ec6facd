from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from airflow_bt.steps.shard import ShardInputError, shard_partition
from airflow_bt.storage import for_uri, join_uri

HEADER = "id,name,score"


def write_csv(folder: Path, name: str, rows: list[str], header: str = HEADER, newline_at_end: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    text = "\n".join([header, *rows]) + ("\n" if newline_at_end else "")
    (folder / name).write_text(text)


def run(tmp_path: Path, **kwargs):
    store = for_uri(tmp_path.as_uri())
    base = tmp_path.as_uri()
    return store, shard_partition(
        store, f"{base}/in/", f"{base}/work/shard-1/", f"{base}/work/shard-1.manifest",
        f"{base}/work/shard-1.json", **kwargs,
    )


def shard_rows(store, summary) -> list[str]:
    rows: list[str] = []
    for shard in summary["shards"]:
        rows += store.read_bytes(shard["uri"]).decode().splitlines()
    return rows


def test_shards_keep_order_strip_headers_and_count(tmp_path):
    rows_a = [f"{i},name{i},{i * 1.5}" for i in range(3000)]
    rows_b = [f"{i},name{i},{i * 1.5}" for i in range(3000, 5000)]
    write_csv(tmp_path / "in", "a.csv", rows_a)
    write_csv(tmp_path / "in", "b.csv", rows_b)
    (tmp_path / "in" / "_SUCCESS").write_text("")
    store, summary = run(tmp_path, min_shards=4)
    assert summary["header"] == HEADER
    assert len(summary["shards"]) == 4
    assert shard_rows(store, summary) == rows_a + rows_b  # order kept, no header inside
    assert [s["records"] for s in summary["shards"]] == [
        len(store.read_bytes(s["uri"]).splitlines()) for s in summary["shards"]
    ]
    sizes = [s["bytes"] for s in summary["shards"]]
    assert max(sizes) - min(sizes) < 0.05 * sum(sizes)  # roughly equal
    assert [i["records"] for i in summary["inputs"]] == [3000, 2000]
    manifest = json.loads(store.read_bytes(summary["manifest_uri"]))
    assert manifest[0] == {"prefix": summary["shard_prefix"]}
    assert manifest[1:] == ["part-00000.csv", "part-00001.csv", "part-00002.csv", "part-00003.csv"]
    assert json.loads(store.read_bytes(summary["summary_uri"]))["records"] == 5000


def test_shard_count_from_target_size(tmp_path):
    write_csv(tmp_path / "in", "a.csv", [f"{i},x,{i}" for i in range(20000)])
    size = (tmp_path / "in" / "a.csv").stat().st_size
    _, summary = run(tmp_path, target_shard_mb=size / 3 / 1024 / 1024)
    assert len(summary["shards"]) == 3
    assert summary["records"] == 20000


def test_missing_trailing_newline_is_one_record(tmp_path):
    write_csv(tmp_path / "in", "a.csv", ["1,a,1", "2,b,2"], newline_at_end=False)
    write_csv(tmp_path / "in", "b.csv", ["3,c,3"])
    store, summary = run(tmp_path)
    assert shard_rows(store, summary) == ["1,a,1", "2,b,2", "3,c,3"]
    assert summary["records"] == 3


def test_header_mismatch_names_the_file(tmp_path):
    write_csv(tmp_path / "in", "a.csv", ["1,a,1"])
    write_csv(tmp_path / "in", "b.csv", ["2,b,2"], header="id,name,points")
    with pytest.raises(ShardInputError, match=r"b\.csv line 1: header 'id,name,points' differs from 'id,name,score'"):
        run(tmp_path)
    assert not (tmp_path / "work" / "shard-1.json").exists()


def test_no_input_is_a_clear_error(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "_SUCCESS").write_text("")
    with pytest.raises(ShardInputError, match="no input objects under"):
        run(tmp_path)


def test_jsonl_and_gzip_inputs(tmp_path):
    (tmp_path / "in").mkdir()
    lines = [json.dumps({"id": i}) for i in range(10)]
    (tmp_path / "in" / "a.jsonl").write_text("\n".join(lines[:5]) + "\n")
    with gzip.open(tmp_path / "in" / "b.jsonl.gz", "wt") as fh:
        fh.write("\n".join(lines[5:]) + "\n")
    store, summary = run(tmp_path, min_shards=2)
    assert summary["format"] == "jsonl" and summary["header"] is None
    assert summary["content_type"] == "application/jsonlines"
    assert shard_rows(store, summary) == lines
    assert all(s["key"].endswith(".jsonl") for s in summary["shards"])


def test_mixed_formats_are_refused(tmp_path):
    write_csv(tmp_path / "in", "a.csv", ["1,a,1"])
    (tmp_path / "in" / "b.jsonl").write_text('{"id": 1}\n')
    with pytest.raises(ShardInputError, match="mixes formats"):
        run(tmp_path)


def test_rerun_never_overwrites_shards(tmp_path):
    write_csv(tmp_path / "in", "a.csv", ["1,a,1"])
    run(tmp_path)
    with pytest.raises(FileExistsError):
        run(tmp_path)


def test_more_shards_than_records_makes_no_empty_shards(tmp_path):
    write_csv(tmp_path / "in", "a.csv", ["1,a,1", "2,b,2"])
    store, summary = run(tmp_path, min_shards=8)
    assert all(s["records"] > 0 for s in summary["shards"])
    assert shard_rows(store, summary) == ["1,a,1", "2,b,2"]


def test_shards_on_s3(s3_bucket):
    store = for_uri(s3_bucket, aws_conn_id=None)
    store.put_bytes(join_uri(s3_bucket, "in/dt=1/a.csv"), b"h1,h2\n1,2\n3,4\n")
    summary = shard_partition(store, f"{s3_bucket}/in/dt=1/", f"{s3_bucket}/w/shard-1/", f"{s3_bucket}/w/m",
                              f"{s3_bucket}/w/s.json", min_shards=2)
    assert summary["records"] == 2 and summary["header"] == "h1,h2"
    assert b"".join(store.read_bytes(s["uri"]) for s in summary["shards"]) == b"1,2\n3,4\n"


def test_shard_origins_map_shards_back_to_input_records(tmp_path):
    from airflow_bt.steps.shard import shard_origins

    write_csv(tmp_path / "in", "a.csv", [f"{i},a,{i}" for i in range(6)])
    write_csv(tmp_path / "in", "b.csv", [f"{i},b,{i}" for i in range(6, 10)])
    _, summary = run(tmp_path, min_shards=2)
    counts = [s["records"] for s in summary["shards"]]
    origins = shard_origins(summary)
    assert sum(counts) == 10
    first_key, second_key = (s["key"] for s in summary["shards"])
    assert counts[0] > 6  # the first shard spans both files: a.csv has 6 records, b.csv 4
    assert origins[first_key] == (f"records 1-{counts[0]} of the partition: a.csv (records 1-6), "
                                  f"b.csv (records 1-{counts[0] - 6})")
    assert origins[second_key] == f"records {counts[0] + 1}-10 of the partition: b.csv (records {counts[0] - 5}-4)"
