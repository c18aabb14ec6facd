from __future__ import annotations

import pytest

from airflow_bt.storage import ObjectExistsError, ObjectNotFoundError, for_uri, join_uri


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


def test_replace_bytes_and_missing(base):
    store = for_uri(base, aws_conn_id=None)
    uri = join_uri(base, "_LATEST.json")
    store.replace_bytes(uri, b"1")
    store.replace_bytes(uri, b"2")
    assert store.read_bytes(uri) == b"2"
    with pytest.raises(ObjectNotFoundError):
        store.read_bytes(join_uri(base, "nope"))
    assert not store.exists(join_uri(base, "nope"))


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
