"""The bad-input catalogue of the shard step: each case fails with an error naming object, line, offset
and what to change, and leaves nothing behind to publish -- or, with ``on_bad_record="quarantine"``,
is set aside with its reason while every good record is sharded."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from airflow_bt.steps.shard import ShardInputError, shard_partition
from airflow_bt.storage import for_uri

HEADER = b"id,name,score\n"
GOOD = [f"{i},name{i},{i * 1.5}".encode() for i in range(1, 6)]


def put(tmp_path: Path, name: str, data: bytes) -> None:
    folder = tmp_path / "in"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)


def run(tmp_path: Path, **kwargs):
    store = for_uri(tmp_path.as_uri())
    base = tmp_path.as_uri()
    kwargs.setdefault("errors_uri", f"{base}/work/shard-1.errors.jsonl")
    return store, shard_partition(store, f"{base}/in/", f"{base}/work/shard-1/", f"{base}/work/shard-1.manifest",
                                  f"{base}/work/shard-1.json", **kwargs)


def fails(tmp_path: Path, pattern: str, **kwargs) -> str:
    """The step fails with ``pattern`` in its message and leaves no shard, manifest or summary."""
    with pytest.raises(ShardInputError, match=pattern) as info:
        run(tmp_path, **kwargs)
    work = tmp_path / "work"
    left = sorted(str(p.relative_to(work)) for p in work.rglob("*") if p.is_file()) if work.exists() else []
    assert left == [], f"a failed shard step left {left}"
    assert "set `shard.on_bad_record: quarantine`" in str(info.value) or "quarantine does not apply" in str(
        info.value) or "shard.max_bad_records" in str(info.value)
    return str(info.value)


def sharded(store, summary) -> list[bytes]:
    return [line for s in summary["shards"] for line in store.read_bytes(s["uri"]).split(b"\n")[:-1]]


def quarantined(store, summary) -> list[dict]:
    assert summary["errors_uri"], "nothing was quarantined"
    return [json.loads(line) for line in store.read_bytes(summary["errors_uri"]).splitlines()]


# -- CSV ----------------------------------------------------------------------------------------------------


def test_embedded_newline_in_a_quoted_field_fails_naming_the_line(tmp_path):
    bad = b'3,"two\nlines",4.5'
    put(tmp_path, "a.csv", HEADER + b"\n".join([GOOD[0], GOOD[1], bad, GOOD[2]]) + b"\n")
    offset = len(HEADER) + len(GOOD[0]) + len(GOOD[1]) + 2
    message = fails(tmp_path, rf"a\.csv line 4 \(byte offset {offset}\): a quoted field spans 2 lines")
    assert "Batch Transform splits records at every newline" in message


def test_embedded_newline_quarantined_whole_and_the_rest_sharded(tmp_path):
    bad = b'3,"two\nlines",4.5'
    put(tmp_path, "a.csv", HEADER + b"\n".join([GOOD[0], bad, GOOD[1]]) + b"\n")
    store, summary = run(tmp_path, on_bad_record="quarantine")
    assert sharded(store, summary) == [GOOD[0], GOOD[1]]
    [record] = quarantined(store, summary)
    assert record["line"] == 3 and record["record"] == bad.decode()
    assert "spans 2 lines" in record["reason"]
    assert summary["bad_records"] == 1 and summary["records"] == 2


def test_quoted_commas_and_balanced_quotes_are_fine(tmp_path):
    rows = [b'1,"Smith, J.",2.0', b'2,"say ""hi""",3.0']
    put(tmp_path, "a.csv", HEADER + b"\n".join(rows) + b"\n")
    store, summary = run(tmp_path)
    assert sharded(store, summary) == rows


@pytest.mark.parametrize("validation", ["standard", "strict"])
def test_ragged_row_fails_naming_line_and_field_counts(tmp_path, validation):
    put(tmp_path, "a.csv", HEADER + b"\n".join([GOOD[0], GOOD[1], b"3,only-two", GOOD[2]]) + b"\n")
    fails(tmp_path, r"a\.csv line 4 \(byte offset \d+\): 2 field\(s\), but the header has 3", validation=validation)


@pytest.mark.parametrize("validation", ["standard", "fast"])
def test_ragged_rows_quarantined(tmp_path, validation):
    put(tmp_path, "a.csv", HEADER + b"\n".join([GOOD[0], b"2,x,1,extra", GOOD[1], b"4"]) + b"\n")
    store, summary = run(tmp_path, on_bad_record="quarantine", validation=validation)
    assert sharded(store, summary) == [GOOD[0], GOOD[1]]
    assert [(r["line"], r["reason"]) for r in quarantined(store, summary)] == [
        (3, "4 field(s), but the header has 3"), (5, "1 field(s), but the header has 3")]
    assert summary["inputs"][0]["bad_records"] == 2


def test_fast_validation_leaves_field_counts_to_publish(tmp_path):
    put(tmp_path, "a.csv", HEADER + b"\n".join([GOOD[0], b"2,only-two"]) + b"\n")
    _, summary = run(tmp_path, validation="fast")
    assert summary["records"] == 2  # the publish step's check catches it (tests/unit/test_publish.py)


def test_invalid_utf8_fails_naming_the_byte(tmp_path):
    put(tmp_path, "a.csv", HEADER + GOOD[0] + b"\n2,caf\xe9,1.0\n")
    fails(tmp_path, r"a\.csv line 3 \(byte offset \d+\): invalid UTF-8 at byte 5 of the record")


def test_invalid_utf8_quarantined_with_its_exact_bytes(tmp_path):
    put(tmp_path, "a.csv", HEADER + GOOD[0] + b"\n2,caf\xe9,1.0\n" + GOOD[1] + b"\n")
    store, summary = run(tmp_path, on_bad_record="quarantine")
    assert sharded(store, summary) == [GOOD[0], GOOD[1]]
    [record] = quarantined(store, summary)
    assert bytes.fromhex(record["record_hex"]) == b"2,caf\xe9,1.0"


def test_valid_utf8_passes(tmp_path):
    rows = ["1,café,1.0".encode(), "2,日本,2.0".encode()]
    put(tmp_path, "a.csv", HEADER + b"\n".join(rows) + b"\n")
    store, summary = run(tmp_path)
    assert sharded(store, summary) == rows


def test_byte_order_mark_is_dropped(tmp_path):
    put(tmp_path, "a.csv", b"\xef\xbb\xbf" + HEADER + GOOD[0] + b"\n")
    put(tmp_path, "b.csv", HEADER + GOOD[1] + b"\n")  # the same header without the mark
    store, summary = run(tmp_path)
    assert summary["header"] == "id,name,score"
    assert sharded(store, summary) == [GOOD[0], GOOD[1]]


def test_crlf_line_endings_become_lf(tmp_path):
    put(tmp_path, "a.csv", HEADER.replace(b"\n", b"\r\n") + b"\r\n".join(GOOD) + b"\r\n")
    store, summary = run(tmp_path)
    assert summary["header"] == "id,name,score"
    assert sharded(store, summary) == GOOD
    assert all(b"\r" not in store.read_bytes(s["uri"]) for s in summary["shards"])


def test_blank_lines_are_skipped_and_counted(tmp_path):
    put(tmp_path, "a.csv", HEADER + GOOD[0] + b"\n\n" + GOOD[1] + b"\n\n")
    store, summary = run(tmp_path)
    assert sharded(store, summary) == [GOOD[0], GOOD[1]]
    assert summary["blank_lines"] == 2


def test_empty_files_are_skipped_and_empty_input_makes_no_shards(tmp_path):
    put(tmp_path, "a.csv", b"")
    put(tmp_path, "b.csv", HEADER)  # a header and no rows
    store, summary = run(tmp_path)
    assert summary["shards"] == [] and summary["records"] == 0
    assert [i["records"] for i in summary["inputs"]] == [0, 0]
    assert json.loads(store.read_bytes(summary["manifest_uri"])) == [{"prefix": summary["shard_prefix"]}]


def test_no_files_for_the_date(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "_SUCCESS").write_bytes(b"")
    with pytest.raises(ShardInputError, match=r"no input objects under .*/in/ \(markers like _SUCCESS do not count\)"):
        run(tmp_path)


def test_corrupt_gzip_member_fails_naming_the_object_and_offset(tmp_path):
    body = HEADER + b"\n".join(GOOD * 2000) + b"\n"
    second = bytearray(gzip.compress(body))
    second[len(second) // 2] ^= 0xFF  # a flipped byte inside the second member's deflate stream
    put(tmp_path, "a.csv.gz", gzip.compress(b"") + bytes(second))
    fails(tmp_path, r"a\.csv\.gz: corrupt gzip data after \d+ decompressed bytes \(line \d+\)")


def test_truncated_gzip_fails(tmp_path):
    data = gzip.compress(HEADER + b"\n".join(GOOD * 1000) + b"\n")
    put(tmp_path, "a.csv.gz", data[: len(data) - 20])
    message = fails(tmp_path, r"a\.csv\.gz: corrupt gzip data")
    assert "EOFError" in message or "BadGzipFile" in message


def test_record_over_the_payload_limit(tmp_path):
    long = b"3,x" + b"y" * 200 + b",1.0"
    put(tmp_path, "a.csv", HEADER + b"\n".join([GOOD[0], long, GOOD[1]]) + b"\n")
    message = fails(tmp_path, rf"a\.csv line 3 \(byte offset \d+\): the record is {len(long) + 1} bytes with "
                              r"its newline, over the payload limit of 100 bytes", max_record_bytes=100)
    assert "transform.max_payload_mb" in message
    store, summary = run(tmp_path, max_record_bytes=100, on_bad_record="quarantine",
                         errors_uri=(tmp_path / "q.jsonl").as_uri())
    assert sharded(store, summary) == [GOOD[0], GOOD[1]]
    assert quarantined(store, summary)[0]["record"] == long.decode()


def test_record_longer_than_a_read_block(tmp_path):
    huge = b"3,x" + b"y" * (5 * 1024 * 1024) + b",1.0"
    put(tmp_path, "a.csv", HEADER + b"\n".join([GOOD[0], huge, GOOD[1]]) + b"\n")
    store, summary = run(tmp_path, max_record_bytes=6 * 1024 * 1024)
    assert sharded(store, summary) == [GOOD[0], huge, GOOD[1]]
    put(tmp_path / "again", "a.csv", HEADER + b"\n".join([GOOD[0], huge, GOOD[1]]) + b"\n")
    fails(tmp_path / "again", r"line 3 \(byte offset \d+\): the record is 5242888 bytes", max_record_bytes=1024 * 1024)


def test_too_many_bad_records_fail_even_in_quarantine(tmp_path):
    put(tmp_path, "a.csv", HEADER + b"\n".join([b"x"] * 20 + GOOD) + b"\n")
    fails(tmp_path, r"more than 10 bad records \(shard.max_bad_records\)", on_bad_record="quarantine",
          max_bad_records=10)


# -- JSON Lines ---------------------------------------------------------------------------------------------


def test_broken_json_line_fails_naming_the_line(tmp_path):
    put(tmp_path, "a.jsonl", b'{"a": 1}\n{"a": \n{"a": 3}\n')
    fails(tmp_path, r"a\.jsonl line 2 \(byte offset 9\): not valid JSON: Expecting value")


def test_broken_json_lines_quarantined(tmp_path):
    put(tmp_path, "a.jsonl", b'\xef\xbb\xbf{"a": 1}\n{"a": 2\n{"a": 3}\n')
    store, summary = run(tmp_path, on_bad_record="quarantine")
    assert sharded(store, summary) == [b'{"a": 1}', b'{"a": 3}']
    assert [r["line"] for r in quarantined(store, summary)] == [2]


def test_bad_settings_are_named(tmp_path):
    put(tmp_path, "a.csv", HEADER + GOOD[0] + b"\n")
    with pytest.raises(ShardInputError, match="validation must be one of standard, fast, strict"):
        run(tmp_path, validation="paranoid")
    with pytest.raises(ShardInputError, match="on_bad_record must be one of fail, quarantine"):
        run(tmp_path, on_bad_record="ignore")


@pytest.mark.parametrize("block", [256, 1000, 4096])
def test_block_boundaries_do_not_change_the_outcome(tmp_path, monkeypatch, block):
    """Records cut by block boundaries (carried over, multi-line ones included) come out the same."""
    import random

    from airflow_bt.steps import shard

    monkeypatch.setattr(shard.partition, "BLOCK_BYTES", block)
    rng = random.Random(block)
    lines: list[bytes] = [HEADER.rstrip(b"\n")]
    good: list[bytes] = []
    bad_lines: list[int] = []
    for i in range(600):
        line_no = 1 + sum(line.count(b"\n") + 1 for line in lines)  # of the line appended next
        kind = rng.random()
        if kind < 0.85:
            row = f"{i},n{'x' * rng.randrange(30)},{i}.5".encode()
            good.append(row)
            lines.append(row + (b"\r" if kind < 0.1 else b""))
        elif kind < 0.9:
            bad_lines.append(line_no)
            lines.append(f'{i},"a\n{"b" * rng.randrange(20)}",1'.encode())
        elif kind < 0.95:
            bad_lines.append(line_no)
            lines.append(f"{i},ragged".encode())
        else:
            lines.append(b"")
    text = b"\n".join(lines) + b"\n"
    put(tmp_path, "a.csv", text)
    store, summary = run(tmp_path, on_bad_record="quarantine", max_bad_records=10_000)
    assert sharded(store, summary) == good
    assert [r["line"] for r in quarantined(store, summary)] == bad_lines
    for record in quarantined(store, summary):
        offset = record["byte_offset"]
        assert text[offset : offset + len(record["record"])].decode() == record["record"].replace("\r", "")


def test_small_blocks_with_records_longer_than_a_block(tmp_path, monkeypatch):
    from airflow_bt.steps import shard

    monkeypatch.setattr(shard.partition, "BLOCK_BYTES", 64)
    rows = [f"{i},{'n' * (i * 7 % 150)},{i}".encode() for i in range(200)]
    put(tmp_path, "a.csv", HEADER + b"\n".join(rows) + b"\n")
    store, summary = run(tmp_path, min_shards=3)
    assert sharded(store, summary) == rows
    assert sum(s["records"] for s in summary["shards"]) == 200


def test_balanced_ragged_rows_pass_the_block_count_and_strict_catches_them(tmp_path):
    put(tmp_path, "a.csv", HEADER + b"\n".join([GOOD[0], b"2,x,1,extra", b"3,y", GOOD[1]]) + b"\n")
    _, summary = run(tmp_path)  # standard: +1 and -1 field in one block balance out (documented)
    assert summary["records"] == 4
    put(tmp_path / "strict", "a.csv", HEADER + b"\n".join([GOOD[0], b"2,x,1,extra", b"3,y", GOOD[1]]) + b"\n")
    fails(tmp_path / "strict", r"a\.csv line 3 \(byte offset \d+\): 4 field\(s\), but the header has 3",
          validation="strict")


def test_fast_validation_leaves_blank_lines_to_publish(tmp_path):
    from airflow_bt.steps.publish import ReconcileError, publish_attempt

    put(tmp_path, "a.csv", HEADER + GOOD[0] + b"\n\n" + GOOD[1] + b"\n")
    store, summary = run(tmp_path, validation="fast")
    assert summary["records"] == 3  # the blank line went through
    preds = tmp_path.as_uri() + "/work/transform-1/"
    store.put_bytes(preds + "part-00000.csv.out", b"0.5\n" * 3)
    with pytest.raises(ReconcileError, match=r"record 2 \(a\.csv record 2\): 1 field\(s\), but the header has 3"):
        publish_attempt(store, summary, preds, tmp_path.as_uri() + "/out/a-1/",
                        tmp_path.as_uri() + "/out/_LATEST.json", prediction_columns=["p"])
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]  # nothing published


# -- blank lines before the header, one-column CSV, JSON the brace checks cannot see (issue 12) --------------


@pytest.mark.parametrize("lead", [b"\n", b"\n\n\n", b"\xef\xbb\xbf\n", b"\r\n\r\n", b"  \n\t\n"],
                         ids=["one", "several", "bom-then-blank", "crlf", "whitespace"])
@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_blank_lines_before_the_header_are_skipped_and_counted(tmp_path, lead, gz):
    body = lead + b"id,x\n2,20\n\n3,30\n"
    put(tmp_path, "a.csv.gz" if gz else "a.csv", gzip.compress(body) if gz else body)
    put(tmp_path, "b.csv", b"id,x\n4,40\n")
    store, summary = run(tmp_path)
    assert sharded(store, summary) == [b"2,20", b"3,30", b"4,40"]
    assert [i["records"] for i in summary["inputs"]] == [2, 1]  # the file with data is not "empty"
    leading = lead.count(b"\n")
    assert summary["blank_lines"] == leading + 1 and summary["inputs"][0]["blank_lines"] == leading + 1
    assert summary["header"] == "id,x"


def test_line_numbers_count_the_blank_lines_before_the_header(tmp_path):
    put(tmp_path, "a.csv", b"\n\nid,x\n1,1\n2\n")
    fails(tmp_path, r"a\.csv line 5 \(byte offset 11\): 1 field\(s\), but the header has 2")
    put(tmp_path / "two", "a.csv", b"id,x\n1,1\n")
    put(tmp_path / "two", "b.csv", b"\nid,y\n")
    fails(tmp_path / "two", r"b\.csv line 2: header 'id,y' differs from 'id,x'")


def test_a_file_of_blank_lines_only_is_empty(tmp_path):
    put(tmp_path, "a.csv", b"\n\r\n  \n")
    put(tmp_path, "b.csv", b"id\n1\n")
    store, summary = run(tmp_path)
    assert sharded(store, summary) == [b"1"]
    assert [(i["records"], i.get("blank_lines")) for i in summary["inputs"]] == [(0, 3), (1, None)]


@pytest.mark.parametrize("validation", ["fast", "standard", "strict"])
def test_blank_lines_of_a_one_column_csv_are_dropped_in_every_mode(tmp_path, validation):
    from airflow_bt.steps.publish import publish_attempt

    put(tmp_path, "a.csv", b"id\n1\n\n2\n\n")
    store, summary = run(tmp_path, validation=validation)
    assert sharded(store, summary) == [b"1", b"2"]
    assert summary["records"] == 2 and summary["blank_lines"] == 2
    preds = tmp_path.as_uri() + "/work/transform-1/"
    for shard in summary["shards"]:
        rows = store.read_bytes(shard["uri"]).splitlines()
        store.put_bytes(preds + shard["key"] + ".out", b"".join(b"P" + row + b"\n" for row in rows))
    manifest = publish_attempt(store, summary, preds, tmp_path.as_uri() + "/out/a-1/",
                               tmp_path.as_uri() + "/out/_LATEST.json", prediction_columns=["p"])
    published = b"".join(store.read_bytes(part["uri"]) for part in manifest["parts"])
    assert published == b"id,p\n1,P1\n2,P2\n"


def test_spaces_are_a_value_in_a_one_column_csv_at_any_block_boundary(tmp_path, monkeypatch):
    """A one-column CSV's field may be spaces: kept whole, whichever tier looks at its block."""
    from airflow_bt.steps import shard

    rows = [b"1", b" ", b"2", b"  ", b"3"] * 40
    for block in (8, 64, 4096):
        monkeypatch.setattr(shard.partition, "BLOCK_BYTES", block)
        put(tmp_path / str(block), "a.csv", b"id\n" + b"\n".join(rows) + b"\n")
        store, summary = run(tmp_path / str(block))
        assert sharded(store, summary) == rows and summary["blank_lines"] == 0


@pytest.mark.parametrize("bad", [b'{"id": 2, }', b'{"id":2}{"id":9}', b'{"id" 2}', b'{"id": tru}', b'{"a":[1,]}'])
@pytest.mark.parametrize("validation", ["fast", "standard", "strict"])
def test_invalid_json_lines_fail_naming_the_line_in_every_mode(tmp_path, bad, validation):
    good = b"".join(b'{"id": %d, "name": "n%d"}\n' % (i, i) for i in range(2000))  # a block the fast tier sees
    put(tmp_path, "a.jsonl", good + bad + b"\n" + good)
    fails(tmp_path, rf"a\.jsonl line 2001 \(byte offset {len(good)}\): not valid JSON: .* of the record",
          validation=validation)
    put(tmp_path / "q", "a.jsonl", good + bad + b"\n" + good)
    store, summary = run(tmp_path / "q", validation=validation, on_bad_record="quarantine")
    assert len(sharded(store, summary)) == 4000
    assert [(r["line"], r["record"]) for r in quarantined(store, summary)] == [(2001, bad.decode())]


def test_invalid_json_is_found_without_msgspec(tmp_path, monkeypatch):
    """The standard library's parser vouches for JSON Lines where msgspec is not installed."""
    from airflow_bt.steps import input_checks

    monkeypatch.setattr(input_checks, "_json_lines_decoder", False)
    good = b"".join(b'{"id": %d}\n' % i for i in range(100))
    put(tmp_path, "a.jsonl", good + b'{"id":2}{"id":9}\n')
    fails(tmp_path, r"a\.jsonl line 101 \(byte offset \d+\): not valid JSON: Extra data at character 9")
    put(tmp_path / "ok", "a.jsonl", good)
    _, summary = run(tmp_path / "ok")
    assert summary["records"] == 100
