from __future__ import annotations

import logging
import os
import stat
import threading

import pytest

from airflow_bt.storage import ObjectExistsError, ObjectNotFoundError, PreconditionFailedError, for_uri, join_uri
from airflow_bt.storage import local as local_storage


@pytest.fixture(params=["file", "s3"])
def base(request, tmp_path):
    if request.param == "file":
        yield tmp_path.as_uri() + "/store"
    else:
        yield request.getfixturevalue("s3_bucket") + "/store"


def test_list_is_recursive_sorted_and_relative(base):
    store = for_uri(base, aws_conn_id=None)
    for key in ["b.csv", "a/2.csv", "a/1.csv", "c/d/e.csv"]:
        store.put_bytes(join_uri(base, key), key.encode())
    listed = list(store.list(base))
    assert [o.key for o in listed] == ["a/1.csv", "a/2.csv", "b.csv", "c/d/e.csv"]
    assert listed[0].uri == join_uri(base, "a/1.csv")
    assert listed[0].size == len(b"a/1.csv")
    assert list(store.list(join_uri(base, "missing"))) == []


def test_create_only_write_never_overwrites(base):
    store = for_uri(base, aws_conn_id=None)
    uri = join_uri(base, "x/obj.bin")
    store.put_bytes(uri, b"first")
    with pytest.raises(ObjectExistsError, match="already exists"):
        store.put_bytes(uri, b"second")
    assert store.read_bytes(uri) == b"first"


def test_failed_write_leaves_nothing(base):
    store = for_uri(base, aws_conn_id=None)
    uri = join_uri(base, "partial.csv")
    with pytest.raises(RuntimeError), store.open_write(uri) as out:
        out.write(b"half a file")
        raise RuntimeError("crash mid-write")
    assert not store.exists(uri)
    assert list(store.list(base)) == []


def test_streamed_write_and_read(base):
    store = for_uri(base, aws_conn_id=None)
    uri = join_uri(base, "big.bin")
    chunk = bytes(range(256)) * 4096
    with store.open_write(uri) as out:
        for _ in range(40):  # 40 MiB, over the S3 spool's in-memory limit
            out.write(chunk)
    assert store.stat(uri).size == 40 * len(chunk)
    with store.open_read(uri) as src:
        assert src.read(len(chunk)) == chunk


def test_compare_and_swap_writes_only_at_the_version_read(base):
    store = for_uri(base, aws_conn_id=None)
    uri = join_uri(base, "_LATEST.json")
    assert store.read_versioned(uri) is None
    store.replace_if(uri, b"1", None)  # a first write: only if there is none
    with pytest.raises(PreconditionFailedError):
        store.replace_if(uri, b"x", None)
    first = store.read_versioned(uri)
    assert first is not None and first.data == b"1"
    store.replace_if(uri, b"2", first.version)
    with pytest.raises(PreconditionFailedError):  # a writer that read "1" lost the race
        store.replace_if(uri, b"3", first.version)
    second = store.read_versioned(uri)
    assert second is not None and second.data == b"2" and second.version != first.version
    with pytest.raises(ObjectNotFoundError):
        store.read_bytes(join_uri(base, "nope"))
    assert not store.exists(join_uri(base, "nope"))
    assert [o.key for o in store.list(base)] == ["_LATEST.json"]  # no lock or temp file is listed


def test_concurrent_compare_and_swap_loses_no_update(tmp_path):
    """Eight writers each add their name to one pointer in a read / conditional-write loop.

    Files only: moto checks a conditional PUT and stores the object without a lock, so concurrent
    requests to it can both succeed (S3 itself decides them atomically); the S3 path is pinned with
    deterministic interleavings (tests/unit/test_latest_pointer.py).
    """
    base = tmp_path.as_uri()
    store = for_uri(base)
    uri = join_uri(base, "counter")
    store.replace_if(uri, b"", None)
    go = threading.Barrier(8)

    def writer(name: str) -> None:
        go.wait()
        for _ in range(3):
            while True:
                current = store.read_versioned(uri)
                assert current is not None
                try:
                    store.replace_if(uri, current.data + name.encode() + b",", current.version)
                    break
                except PreconditionFailedError:
                    continue

    threads = [threading.Thread(target=writer, args=(f"w{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    names = store.read_bytes(uri).decode().strip(",").split(",")
    assert sorted(names) == sorted(f"w{i}" for i in range(8) for _ in range(3))


def test_published_files_get_the_umask_mode_not_0600(tmp_path):
    """Readers running as another user can read published files (mkstemp alone made them 0600)."""
    store = for_uri(tmp_path.as_uri())
    mask = os.umask(0o022)
    os.umask(mask)
    expected = 0o666 & ~mask  # what open() gives a new file: 0644 under the usual umask 022
    store.put_bytes(join_uri(tmp_path.as_uri(), "out/part-00000.csv"), b"id\n")
    store.replace_if(join_uri(tmp_path.as_uri(), "out/_LATEST.json"), b"{}", None)
    assert stat.S_IMODE((tmp_path / "out/part-00000.csv").stat().st_mode) == expected
    assert stat.S_IMODE((tmp_path / "out/_LATEST.json").stat().st_mode) == expected


def test_listing_skips_a_dangling_symlink_and_a_file_removed_meanwhile(tmp_path, monkeypatch, caplog):
    (tmp_path / "in").mkdir()
    for name in ("a.csv", "b.csv", "c.csv"):
        (tmp_path / "in" / name).write_text("id\n1\n")
    (tmp_path / "in" / "dangling.csv").symlink_to(tmp_path / "gone.csv")
    real_stat = os.stat

    def stat_after_b_was_removed(path, *args, **kwargs):
        if str(path).endswith("b.csv"):
            raise FileNotFoundError(path)  # removed between the directory walk and the stat
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(local_storage.os, "stat", stat_after_b_was_removed)
    with caplog.at_level(logging.WARNING, logger="airflow_bt.storage.local"):
        keys = [o.key for o in for_uri(tmp_path.as_uri()).list(join_uri(tmp_path.as_uri(), "in"))]
    assert keys == ["a.csv", "c.csv"]
    assert "dangling.csv" in caplog.text and "b.csv" in caplog.text


def test_portable_storage_pickles(base):
    import pickle

    store = for_uri(base, aws_conn_id=None)
    store.put_bytes(join_uri(base, "p"), b"ok")
    clone = pickle.loads(pickle.dumps(store.portable()))
    assert clone.read_bytes(join_uri(base, "p")) == b"ok"


def test_unsupported_scheme():
    with pytest.raises(ValueError, match="unsupported URI"):
        for_uri("gs://bucket/x")


def test_s3_reads_iterate_by_line_like_files(s3_bucket):
    """Iterating an S3 read stream yields lines (botocore's StreamingBody alone yields 1 KiB chunks)."""
    from airflow_bt.storage.s3 import S3Storage

    store = S3Storage(aws_conn_id=None)
    lines = [f"{i},{'x' * (i % 700)}\n".encode() for i in range(500)]
    with store.open_write(f"{s3_bucket}/lines.csv") as out:
        out.write(b"".join(lines))
    with store.open_read(f"{s3_bucket}/lines.csv") as stream:
        assert list(stream) == lines
    with store.open_read(f"{s3_bucket}/lines.csv") as stream:
        assert stream.read(3) == b"0,\n" and stream.readline() == lines[1] and stream.read() == b"".join(lines[2:])


def test_s3_ranged_reads_serve_a_parquet_reader_and_refuse_a_replaced_object(s3_bucket):
    """pyarrow reads a Parquet object through ranged GETs pinned to the ETag it was listed with; an object
    replaced meanwhile fails the read, naming it, instead of mixing two versions."""
    import boto3
    import pyarrow as pa
    import pyarrow.parquet as pq

    from airflow_bt.storage.s3 import S3Storage

    store = S3Storage(aws_conn_id=None)
    table = pa.table({"id": list(range(50_000)), "text": [f"row {i}, quoted \"{i}\"" for i in range(50_000)]})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, row_group_size=10_000)
    with store.open_write(f"{s3_bucket}/t.parquet") as out:
        out.write(sink.getvalue().to_pybytes())
    info = store.stat(f"{s3_bucket}/t.parquet")
    ranges: list[str] = []
    client = boto3.client("s3")
    client.meta.events.register("before-call.s3.GetObject",
                                lambda params, **_: ranges.append(params["headers"].get("Range", "")))
    store.__dict__["client"] = client  # count the reader's calls
    with store.open_ranged(info) as stream:
        read = pq.ParquetFile(stream).read_row_group(3)
    assert read.equals(table.slice(30_000, 10_000))
    assert ranges and all(r.startswith("bytes=") for r in ranges)
    assert sum(int(b) - int(a) + 1 for a, b in (r[6:].split("-") for r in ranges)) < info.size  # not the whole file
    client.put_object(Bucket="bucket-a", Key="t.parquet", Body=b"PAR1 another version PAR1")
    with pytest.raises(Exception, match=r"t\.parquet changed or vanished while it was read"), \
            store.open_ranged(info) as stream:
        pq.ParquetFile(stream).read()
