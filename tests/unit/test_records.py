"""Layer 1: splitting streams into records and packing them into payloads."""

from __future__ import annotations

import gzip
import io
import random
import struct
import time

import pytest

from airflow_bt.records import (
    MB,
    RecordFormatError,
    RecordTooLargeError,
    decompressed,
    iter_payloads,
    iter_records,
    payload_limit,
)
from airflow_bt.records.batching import _pack
from airflow_bt.records.splitting import _lines


def payloads(data: bytes, split: str = "Line", strategy: str = "MultiRecord", limit: int | None = None,
             block: int = 4) -> list[tuple[bytes, int]]:
    return list(iter_payloads(io.BytesIO(data), split_type=split, batch_strategy=strategy,
                              max_payload_bytes=limit, uri="file:///in/x.csv", block_size=block))


def recordio(body: bytes, cflag: int = 0) -> bytes:
    header = struct.pack("<II", 0xCED7230A, (cflag << 29) | len(body))
    return header + body + b"\0" * (-len(body) % 4)


def tfrecord(body: bytes) -> bytes:
    return struct.pack("<Q", len(body)) + b"crc!" + body + b"crc!"


# --- splitting ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("block", [1, 3, 1 << 20])
def test_line_records_keep_terminators_and_add_the_missing_last_one(block: int) -> None:
    data = b"a,1\n\nbb,22\nccc"
    got = list(iter_records(io.BytesIO(data), "Line", block_size=block))
    assert got == [b"a,1\n", b"\n", b"bb,22\n", b"ccc\n"]


def test_empty_stream_has_no_records() -> None:
    for split in ("None", "Line", "RecordIO", "TFRecord"):
        assert list(iter_records(io.BytesIO(b""), split)) == []


def test_split_none_is_the_whole_object() -> None:
    assert list(iter_records(io.BytesIO(b"x\ny"), "None")) == [b"x\ny"]


def test_line_record_over_the_limit_fails_early_with_its_number() -> None:
    stream = io.BytesIO(b"ok\n" + b"x" * 50)
    with pytest.raises(RecordTooLargeError, match=r"file:///a\.csv: record 2 is more than 10 bytes"):
        list(iter_records(stream, "Line", uri="file:///a.csv", max_record_bytes=10, block_size=4))


def test_recordio_records_keep_their_framing_and_multipart_records_stay_whole() -> None:
    one, two = recordio(b"hello"), recordio(b"ab", 1) + recordio(b"cd", 2) + recordio(b"e", 3)
    assert list(iter_records(io.BytesIO(one + two), "RecordIO", block_size=3)) == [one, two]


def test_recordio_bad_magic_and_truncation() -> None:
    with pytest.raises(RecordFormatError, match="record 1 has a bad magic"):
        list(iter_records(io.BytesIO(b"\0" * 8), "RecordIO"))
    with pytest.raises(RecordFormatError, match="record 2 is truncated"):
        list(iter_records(io.BytesIO(recordio(b"abcd") + recordio(b"abcd")[:-2]), "RecordIO"))


def test_tfrecord_records() -> None:
    recs = [tfrecord(b"x" * n) for n in (0, 1, 17)]
    assert list(iter_records(io.BytesIO(b"".join(recs)), "TFRecord", block_size=5)) == recs
    with pytest.raises(RecordFormatError, match="TFRecord record 1 is truncated"):
        list(iter_records(io.BytesIO(recs[2][:-1]), "TFRecord"))


def test_unknown_split_type() -> None:
    with pytest.raises(ValueError, match="unknown SplitType 'Csv'"):
        iter_records(io.BytesIO(b""), "Csv")


def test_gzip_decompresses_streaming_including_concatenated_members() -> None:
    data = gzip.compress(b"1,2\n3,4\n") + gzip.compress(b"5,6")
    stream = decompressed(io.BytesIO(data), "Gzip")
    assert list(iter_records(stream, "Line", block_size=2)) == [b"1,2\n", b"3,4\n", b"5,6\n"]
    raw = io.BytesIO(b"x")
    assert decompressed(raw, "None") is raw
    assert decompressed(raw, None) is raw


# --- batching ----------------------------------------------------------------------------------------------

def test_payload_limit_is_binary_megabytes_and_zero_is_unlimited() -> None:
    assert MB == 1024 * 1024
    assert payload_limit(6) == 6 * 1024 * 1024
    assert payload_limit(0) is None


def test_single_record_sends_one_line_per_request() -> None:
    assert payloads(b"1,2\n3,4", strategy="SingleRecord", limit=100) == [(b"1,2\n", 1), (b"3,4\n", 1)]


def test_multi_record_packs_whole_lines_up_to_the_limit() -> None:
    assert payloads(b"aaa\nbbb\ncc\nd", limit=10) == [(b"aaa\nbbb\n", 2), (b"cc\nd\n", 2)]


def test_multi_record_exact_fit_is_one_payload() -> None:
    assert payloads(b"aaaa\nbbbb\n", limit=10) == [(b"aaaa\nbbbb\n", 2)]


def test_added_final_newline_counts_against_the_limit() -> None:
    assert payloads(b"aaaa\nbbbb", limit=9) == [(b"aaaa\n", 1), (b"bbbb\n", 1)]
    assert payloads(b"aaaa\nbbbb", limit=10) == [(b"aaaa\nbbbb\n", 2)]


@pytest.mark.parametrize("strategy", ["SingleRecord", "MultiRecord"])
def test_record_too_large_names_object_and_record_number(strategy: str) -> None:
    with pytest.raises(RecordTooLargeError) as err:
        payloads(b"a\nbbbbbbbbbbbb\nc\n", strategy=strategy, limit=5)
    assert str(err.value).startswith("file:///in/x.csv: record 2 is ")
    assert "over the payload limit of 5 bytes" in str(err.value)
    assert err.value.record == 2 and err.value.uri == "file:///in/x.csv"


def test_record_too_large_gives_the_size_when_it_is_in_the_buffer() -> None:
    with pytest.raises(RecordTooLargeError, match="record 2 is 13 bytes"):
        payloads(b"a\nbbbbbbbbbbbb\nc\n", limit=5, block=1 << 20)


def test_last_record_too_large_once_its_newline_is_added() -> None:
    with pytest.raises(RecordTooLargeError, match="record 1 is 6 bytes"):
        payloads(b"bbbbb", limit=5)


def test_record_too_large_reports_megabytes_for_real_limits() -> None:
    data = b"x" * (MB + 10) + b"\n"
    with pytest.raises(RecordTooLargeError, match=r"record 1 .* \(MaxPayloadInMB=1\)"):
        list(iter_payloads(io.BytesIO(data), split_type="Line", batch_strategy="MultiRecord",
                           max_payload_in_mb=1))


def test_never_an_empty_payload() -> None:
    assert payloads(b"") == []
    assert payloads(b"", split="None") == []
    assert payloads(b"\n\n", limit=1) == [(b"\n", 1), (b"\n", 1)]


def test_split_none_sends_the_object_whole_and_checks_the_limit() -> None:
    assert payloads(b"a\nb", split="None", limit=3) == [(b"a\nb", 1)]
    with pytest.raises(RecordTooLargeError, match="record 1"):
        payloads(b"a\nbc", split="None", limit=3)


def test_unlimited_multi_record_is_the_whole_object() -> None:
    got = list(iter_payloads(io.BytesIO(b"1\n2"), split_type="Line", batch_strategy="MultiRecord",
                             max_payload_in_mb=0))
    assert got == [(b"1\n2\n", 2)]


def test_multi_record_packs_binary_records() -> None:
    recs = [recordio(b"x" * n) for n in (4, 4, 12)]  # 12, 12, 20 bytes
    got = payloads(b"".join(recs), split="RecordIO", limit=24)
    assert got == [(recs[0] + recs[1], 2), (recs[2], 1)]


def test_line_fast_path_matches_the_record_by_record_packing() -> None:
    rng = random.Random(7)
    for _ in range(200):
        lines = [b"x" * rng.randrange(0, 9) for _ in range(rng.randrange(0, 30))]
        data = b"\n".join(lines) + (b"\n" if rng.random() < 0.5 else b"")
        limit = rng.randrange(9, 40)
        expected = list(_pack(_lines(io.BytesIO(data), "u", limit, 3), limit))
        assert payloads(data, limit=limit, block=rng.choice([1, 5, 64])) == expected


def test_line_fast_path_streams_two_million_rows_quickly() -> None:
    row = b"12345,0.5,abc\n"
    data = row * 2_000_000
    began = time.perf_counter()
    got = list(iter_payloads(io.BytesIO(data), split_type="Line", batch_strategy="MultiRecord",
                             max_payload_in_mb=6))
    elapsed = time.perf_counter() - began
    assert sum(n for _, n in got) == 2_000_000
    assert all(len(p) <= 6 * MB and p.endswith(b"\n") for p, _ in got)
    assert len(got) == -(-len(data) // (6 * MB - 6 * MB % len(row)))
    assert elapsed < 1.0
