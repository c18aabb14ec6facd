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
    with pytest.raises(ReconcileError,
                       match=r"part-00000\.csv \(2 records\) has no predictions: "
                             r"no part-00000\.csv\.out under .*/nothing/"):
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
    with pytest.raises(ReconcileError, match=r"prediction 1: the model returned 2 value\(s\) .* names 1"):
        publish(store, base, summary, preds)


def test_every_prediction_is_checked_not_just_the_first(tmp_path):
    rows = [f"{i},{i}" for i in range(1, 5001)]
    store, base, summary = setup_shards(tmp_path, rows, shards=1)
    preds = write_predictions(store, base, summary, lambda r: "0.1,0.9" if r == "4321,4321" else "0.5")
    with pytest.raises(ReconcileError, match=r"shard part-00000\.csv prediction 4321: the model returned 2 "
                                             r"value\(s\) \(b'0\.1,0\.9'\) but prediction_columns names 1"):
        publish(store, base, summary, preds)
    assert nothing_published(tmp_path)


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


def nothing_published(tmp_path: Path) -> bool:
    out = tmp_path / "out"
    return not out.exists() or not any(p.is_file() for p in out.rglob("*"))


def test_ragged_row_left_to_publish_fails_naming_the_input_record(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.csv").write_text("id,x\n1,1\n2,2\n")
    (tmp_path / "in" / "b.csv").write_text("id,x\n3,3\n4\n5,5\n")
    base = tmp_path.as_uri()
    store = for_uri(base)
    summary = shard_partition(store, f"{base}/in/", f"{base}/w/shard-1/", f"{base}/w/m", f"{base}/w/s.json",
                              validation="fast")
    preds = write_predictions(store, base, summary, lambda r: "0.5")
    with pytest.raises(ReconcileError, match=r"shard part-00000\.csv record 4 \(b\.csv record 2\): 1 field\(s\), "
                                             r"but the header has 2; nothing was published"):
        publish(store, base, summary, preds)
    assert nothing_published(tmp_path)


def test_partial_retry_predictions_come_from_the_first_prefix_that_has_them(tmp_path):
    rows = [f"{i},{i}" for i in range(100)]
    store, base, summary = setup_shards(tmp_path, rows, shards=3)
    first = write_predictions(store, base, summary, lambda r: "1", prefix="w/transform-1")
    (tmp_path / "w/transform-1" / "part-00001.csv.out").unlink()  # try 1 died before this shard was written
    second = join_uri(base, "w/transform-2") + "/"
    shard = summary["shards"][1]
    store.put_bytes(second + "part-00001.csv.out", b"2\n" * shard["records"])
    manifest = publish(store, base, summary, [second, first])
    values = [line.rsplit(",", 1)[1] for line in read_published(store, manifest) if line != "id,x,p"]
    counts = [s["records"] for s in summary["shards"]]
    assert values == ["1"] * counts[0] + ["2"] * counts[1] + ["1"] * counts[2]
    assert manifest["rows_out"] == 100


def test_rejected_records_are_left_out_and_listed_with_their_origin(tmp_path):
    rows = [f"{i},{i}" for i in range(1, 21)]
    store, base, summary = setup_shards(tmp_path, rows, shards=2)
    first, second = summary["shards"]
    preds = join_uri(base, "w/transform-1") + "/"
    store.put_bytes(preds + first["key"] + ".out", b"".join(b"%d\n" % i for i in range(1, first["records"] + 1)))
    rejected = [2, 5]
    keep = [i for i in range(1, second["records"] + 1) if i not in rejected]
    store.put_bytes(preds + "errors/" + second["key"] + ".jsonl", b"".join(
        json.dumps({"object": second["uri"], "record": n, "message": "bad value", "input": "x"}).encode() + b"\n"
        for n in rejected))
    store.put_bytes(preds + second["key"] + ".out", b"".join(b"%d\n" % (first["records"] + i) for i in keep))
    manifest = publish(store, base, summary, preds)
    body = [line for line in read_published(store, manifest) if line != "id,x,p"]
    assert all(line.split(",")[0] == line.split(",")[2] for line in body)  # each row with its own prediction
    assert len(body) == 18 and manifest["rows_out"] == 18 and manifest["rejected"] == 2
    listed = [json.loads(line) for line in store.read_bytes(manifest["errors"]["model_rejected"]).splitlines()]
    assert [(r["record"], r["origin"], r["message"]) for r in listed] == [
        (n, f"a.csv record {first['records'] + n}", "bad value") for n in rejected]


def test_quarantined_records_are_copied_to_the_attempt_and_counted(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.csv").write_text("id,x\n1,1\n2\n3,3\n")
    base = tmp_path.as_uri()
    store = for_uri(base)
    summary = shard_partition(store, f"{base}/in/", f"{base}/w/shard-1/", f"{base}/w/m", f"{base}/w/s.json",
                              on_bad_record="quarantine", errors_uri=f"{base}/w/shard-1.errors.jsonl")
    preds = write_predictions(store, base, summary, lambda r: "0.5")
    manifest = publish(store, base, summary, preds)
    assert read_published(store, manifest) == ["id,x,p", "1,1,0.5", "3,3,0.5"]
    assert (manifest["input_records"], manifest["quarantined"], manifest["rows_out"]) == (3, 1, 2)
    [record] = [json.loads(line) for line in store.read_bytes(manifest["errors"]["bad_input"]).splitlines()]
    assert (record["line"], record["record"]) == (3, "2")


def test_empty_input_publishes_an_empty_result(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.csv").write_text("id,x\n")
    base = tmp_path.as_uri()
    store = for_uri(base)
    summary = shard_partition(store, f"{base}/in/", f"{base}/w/shard-1/", f"{base}/w/m", f"{base}/w/s.json")
    manifest = publish(store, base, summary, join_uri(base, "w/transform-1") + "/")
    assert manifest["parts"] == [] and manifest["rows_out"] == 0
    assert read_latest(store, join_uri(base, "out/dt=1"))["attempt_prefix"] == manifest["attempt_prefix"]
    assert (tmp_path / "out/dt=1/run-a-1/_SUCCESS").exists()


def test_latest_never_points_at_an_attempt_without_success(tmp_path):
    from airflow_bt.steps.publish import point_latest

    rows = [f"{i},{i}" for i in range(10)]
    store, base, summary = setup_shards(tmp_path, rows, shards=1)
    preds = write_predictions(store, base, summary, lambda r: "1")
    good = publish(store, base, summary, preds)
    half = join_uri(base, "out/dt=1/run-b-1") + "/"
    store.put_bytes(half + "_manifest.json", b"{}")  # an attempt killed before its _SUCCESS
    with pytest.raises(RuntimeError, match=r"refusing to point .*_LATEST\.json at .*run-b-1/: it has no _SUCCESS"):
        point_latest(store, join_uri(base, "out/dt=1/_LATEST.json"),
                     {**good, "attempt_prefix": half})
    assert read_latest(store, join_uri(base, "out/dt=1"))["attempt_prefix"] == good["attempt_prefix"]


def test_a_json_line_that_is_not_an_object_fails_naming_the_record(tmp_path):
    # before: a bare AttributeError ('list' object has no attribute 'update') from the join
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jsonl").write_text('{"id": 1}\n[1, 2]\n')
    base = tmp_path.as_uri()
    store = for_uri(base)
    summary = shard_partition(store, f"{base}/in/", f"{base}/w/s/", f"{base}/w/m", f"{base}/w/s.json")
    store.put_bytes(join_uri(base, "w/t/part-00000.jsonl.out"), b'{"p": 0.25}\n{"p": 0.75}\n')
    with pytest.raises(ReconcileError, match=r"record 2: input is not a JSON object"):
        publish_attempt(store, summary, join_uri(base, "w/t/"), join_uri(base, "o/a/"),
                        join_uri(base, "o/_LATEST.json"), prediction_columns=["p"])
    assert not (tmp_path / "o" / "a" / "_SUCCESS").exists()


def test_an_engine_pointed_at_the_attempt_reads_the_rows_and_nothing_else(tmp_path):
    """Athena, Spark, DuckDB and pyarrow read every object under a prefix but ``_``/``.`` names: the attempt's
    metadata and rejected records live under such names (``_errors/``, ``_manifest.json``, ``_SUCCESS``)."""
    pads = pytest.importorskip("pyarrow.dataset")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.csv").write_text("id,x\n1,1\n2\n3,3\n4,4\n")  # line 3 is bad: quarantined
    base = tmp_path.as_uri()
    store = for_uri(base)
    summary = shard_partition(store, f"{base}/in/", f"{base}/w/shard-1/", f"{base}/w/m", f"{base}/w/s.json",
                              on_bad_record="quarantine", errors_uri=f"{base}/w/shard-1.errors.jsonl")
    manifest = publish(store, base, summary, write_predictions(store, base, summary, lambda r: "0.5"))
    table = pads.dataset(str(tmp_path / "out/dt=1/run-a-1"), format="csv").to_table()
    assert table.column_names == ["id", "x", "p"]
    assert table.to_pylist() == [{"id": 1, "x": 1, "p": 0.5}, {"id": 3, "x": 3, "p": 0.5}, {"id": 4, "x": 4, "p": 0.5}]
    assert manifest["errors"]["bad_input"].startswith(manifest["attempt_prefix"] + "_errors/")
