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


# -- shard sizes are decompressed sizes; no shard over the target by more than a record (issue 12) ----------


def varied_rows(n: int, seed: int = 7) -> list[str]:
    import random

    rng = random.Random(seed)
    return [f"{i},{'n' * rng.randrange(1, 60)},{rng.random():.6f}" for i in range(n)]


def assert_balanced(store, summary, rows: list[str], shards: int) -> None:
    sizes = [s["bytes"] for s in summary["shards"]]
    assert len(sizes) == shards
    assert max(sizes) / (sum(sizes) / len(sizes)) <= 1.1, sizes
    longest = max(len(r) + 1 for r in rows)
    target = summary["target_shard_bytes"]
    assert all(size <= target + longest for size in sizes), (sizes, target)
    assert shard_rows(store, summary) == rows


def test_gzip_shards_are_balanced_by_decompressed_bytes(tmp_path):
    rows = varied_rows(60_000)
    (tmp_path / "in").mkdir()
    body = ("\n".join([HEADER, *rows]) + "\n").encode()
    (tmp_path / "in" / "a.csv.gz").write_bytes(gzip.compress(body))
    store, summary = run(tmp_path, min_shards=4)
    assert summary["data_bytes"] == len(body) and summary["bytes"] < len(body) / 2
    assert_balanced(store, summary, rows, 4)


def test_concatenated_gzip_members_are_measured_whole(tmp_path):
    """gzip's trailer gives the last member's size only: the step measures the whole stream."""
    rows = varied_rows(20_000, seed=3)
    (tmp_path / "in").mkdir()
    body = ("\n".join([HEADER, *rows]) + "\n").encode()
    cut = body.index(b"\n", len(body) // 3) + 1
    (tmp_path / "in" / "a.csv.gz").write_bytes(gzip.compress(body[:cut]) + gzip.compress(body[cut:]))
    write_csv(tmp_path / "in", "b.csv", ["1,x,1"])
    store, summary = run(tmp_path, min_shards=3)
    assert_balanced(store, summary, [*rows, "1,x,1"], 3)


def test_shard_count_comes_from_the_decompressed_size(tmp_path):
    (tmp_path / "in").mkdir()
    body = ("\n".join([HEADER, *[f"{i},same,{i % 7}" for i in range(50_000)]]) + "\n").encode()
    (tmp_path / "in" / "a.csv.gz").write_bytes(gzip.compress(body))
    _, summary = run(tmp_path, target_shard_mb=len(body) / 5 / 1024 / 1024 * 1.001)
    assert len(summary["shards"]) == 5


def test_no_shard_outgrows_the_cap_below_the_s3_single_put_limit(tmp_path, monkeypatch, caplog):
    from airflow_bt.steps import shard

    monkeypatch.setattr(shard.partition, "MAX_SHARD_BYTES", 4000)
    rows = varied_rows(1000)
    write_csv(tmp_path / "in", "a.csv", rows)
    store, summary = run(tmp_path, max_shards=2)
    sizes = [s["bytes"] for s in summary["shards"]]
    assert len(sizes) > 2 and max(sizes) <= 4000 + max(len(r) + 1 for r in rows)
    assert shard_rows(store, summary) == rows
    assert "over shard.max_shards 2" in caplog.text


def test_an_object_bigger_than_listed_makes_a_shard_more_not_a_bigger_one(tmp_path):
    """The last shard does not take "the rest": sizes are only as good as the listing."""
    import dataclasses

    from airflow_bt.storage.local import LocalStorage

    class ShrunkListing(LocalStorage):
        def list(self, prefix_uri):
            for obj in super().list(prefix_uri):
                yield dataclasses.replace(obj, size=obj.size // 2)

    rows = varied_rows(4000)
    write_csv(tmp_path / "in", "a.csv", rows)
    base = tmp_path.as_uri()
    store = ShrunkListing()
    summary = shard_partition(store, f"{base}/in/", f"{base}/work/shard-1/", f"{base}/work/shard-1.manifest",
                              f"{base}/work/shard-1.json", min_shards=2)
    sizes = [s["bytes"] for s in summary["shards"]]
    assert len(sizes) == 4 and max(sizes) <= summary["target_shard_bytes"] + max(len(r) + 1 for r in rows)
    assert shard_rows(store, summary) == rows
