from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_bt.steps.publish import ReconcileError, publish_attempt, read_latest
from airflow_bt.steps.shard import shard_partition
from airflow_bt.storage import for_uri, join_uri


def setup_shards(tmp_path: Path, rows: list[str], header: str = "id,x", shards: int = 2):
    (tmp_path / "in").mkdir(exist_ok=True)
    (tmp_path / "in" / "a.csv").write_text("\n".join([header, *rows]) + "\n")
    base = tmp_path.as_uri()
    store = for_uri(base)
    summary = shard_partition(store, f"{base}/in/", f"{base}/w/shard-1/", f"{base}/w/m", f"{base}/w/s.json",
                              min_shards=shards)
    return store, base, summary


def write_predictions(store, base, summary, fn, prefix="w/transform-1"):
    for shard in summary["shards"]:
        rows = store.read_bytes(shard["uri"]).decode().splitlines()
        store.put_bytes(join_uri(base, prefix, shard["key"] + ".out"),
                        "".join(fn(r) + "\n" for r in rows).encode())
    return join_uri(base, prefix) + "/"


def publish(store, base, summary, preds, attempt="dt=1/run-a-1/", **kw):
    return publish_attempt(store, summary, preds, join_uri(base, "out", attempt) + "/",
                           join_uri(base, "out/dt=1/_LATEST.json"), prediction_columns=["p"], **kw)


def read_published(store, manifest) -> list[str]:
    lines: list[str] = []
    for part in manifest["parts"]:
        lines += store.read_bytes(part["uri"]).decode().splitlines()
    return lines


def test_joins_each_row_with_its_prediction_and_publishes_in_order(tmp_path):
    rows = [f"{i},{i * 2}" for i in range(1000)]
    store, base, summary = setup_shards(tmp_path, rows)
    preds = write_predictions(store, base, summary, lambda r: str(int(r.split(",")[1]) + 1))
    manifest = publish(store, base, summary, preds, metadata={"run_id": "r1", "try_number": 1})
    published = read_published(store, manifest)
    assert published[0] == "id,x,p"
    body = [line for line in published if line != "id,x,p"]
    assert body == [f"{i},{i * 2},{i * 2 + 1}" for i in range(1000)]
    attempt = Path(tmp_path / "out/dt=1/run-a-1")
    assert sorted(p.name for p in attempt.iterdir()) == [
        "_SUCCESS", "_manifest.json", "part-00000.csv", "part-00001.csv"]
    on_disk = json.loads((attempt / "_manifest.json").read_text())
    assert on_disk["rows_in"] == on_disk["rows_out"] == 1000 and on_disk["run_id"] == "r1"
    latest = read_latest(store, join_uri(base, "out/dt=1"))
    assert latest["attempt_prefix"] == manifest["attempt_prefix"] and latest["rows"] == 1000
    # _SUCCESS is written after the manifest, which is written after the parts
    times = {p.name: p.stat().st_mtime_ns for p in attempt.iterdir()}
    assert times["part-00001.csv"] <= times["_manifest.json"] <= times["_SUCCESS"]


def test_count_mismatch_fails_naming_shard_and_counts_and_publishes_nothing(tmp_path):
    store, base, summary = setup_shards(tmp_path, [f"{i},{i}" for i in range(10)])
    preds = write_predictions(store, base, summary, lambda r: "1")
    victim = summary["shards"][1]
    Path(tmp_path / "w/transform-1" / (victim["key"] + ".out")).write_text("1\n" * (victim["records"] - 1))
    with pytest.raises(ReconcileError, match=rf"shard {victim['key']}: {victim['records']} input records but "
                                             rf"{victim['records'] - 1} predictions"):
        publish(store, base, summary, preds)
    assert not (tmp_path / "out").exists()


def test_missing_prediction_object_is_named(tmp_path):
    store, base, summary = setup_shards(tmp_path, ["1,1", "2,2"], shards=1)
    with pytest.raises(ReconcileError, match=r"part-00000\.csv \(2 records\) has no predictions: .* is missing"):
        publish(store, base, summary, join_uri(base, "nothing") + "/")


def test_second_attempt_leaves_first_untouched(tmp_path):
    store, base, summary = setup_shards(tmp_path, [f"{i},{i}" for i in range(50)])
    preds = write_predictions(store, base, summary, lambda r: "0.5")
    first = publish(store, base, summary, preds)
    before = {p: p.read_bytes() for p in (tmp_path / "out/dt=1/run-a-1").iterdir()}
    second = publish(store, base, summary, preds, attempt="dt=1/run-b-1/")
    assert {p: p.read_bytes() for p in (tmp_path / "out/dt=1/run-a-1").iterdir()} == before
    assert read_latest(store, join_uri(base, "out/dt=1"))["attempt_prefix"] == second["attempt_prefix"]
    with pytest.raises(FileExistsError):  # re-publishing the same attempt is a collision, not an overwrite
        publish(store, base, summary, preds)
    assert first["attempt_prefix"] != second["attempt_prefix"]


def test_prediction_width_must_match_columns(tmp_path):
    store, base, summary = setup_shards(tmp_path, ["1,1"], shards=1)
    preds = write_predictions(store, base, summary, lambda r: "0.1,0.9")
    with pytest.raises(ReconcileError, match=r"returned 2 value\(s\) per record .* names 1"):
        publish(store, base, summary, preds)


def test_jsonl_join(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jsonl").write_text('{"id": 1}\n{"id": 2}\n')
    base = tmp_path.as_uri()
    store = for_uri(base)
    summary = shard_partition(store, f"{base}/in/", f"{base}/w/s/", f"{base}/w/m", f"{base}/w/s.json")
    store.put_bytes(join_uri(base, "w/t/part-00000.jsonl.out"), b'{"p": 0.25}\n0.75\n')
    manifest = publish_attempt(store, summary, join_uri(base, "w/t/"), join_uri(base, "o/a/"),
                               join_uri(base, "o/_LATEST.json"), prediction_columns=["p"])
    assert read_published(store, manifest) == ['{"id":1,"p":0.25}', '{"id":2,"p":0.75}']
