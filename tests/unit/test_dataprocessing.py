"""Layer 1: the JSONPath subset and per-record DataProcessing (filters and the join)."""

from __future__ import annotations

import io
import re
from typing import Any

import pytest

from airflow_bt.records import (
    DataProcessingError,
    JsonPath,
    JsonPathSelectError,
    JsonPathSyntaxError,
    RecordProcessor,
    RecordTooLargeError,
    iter_processed_payloads,
)

DOC = {"id": 7, "features": [1, 2, 3], "meta": {"a": 1, "b": [4, 5]}}


@pytest.mark.parametrize(("path", "expected"), [
    ("$", DOC),
    ("", DOC),
    ("$.id", 7),
    ("$['id']", 7),
    ('$["id"]', 7),
    ("$.meta.b[-1]", 5),
    ("$.features[0]", 1),
    ("$.features[-1]", 3),
    ("$.features[1:]", [2, 3]),
    ("$.features[:2]", [1, 2]),
    ("$.features[-2:]", [2, 3]),
    ("$.features[1:99]", [2, 3]),
    ("$.features[2,0]", [3, 1]),
    ("$.features[0,1:]", [1, 2, 3]),
    ("$.features[*]", [1, 2, 3]),
    ("$.meta.*", [1, [4, 5]]),
    ("$['id','features']", {"id": 7, "features": [1, 2, 3]}),
    ("$.meta.['b','a']", {"b": [4, 5], "a": 1}),
    ("$.*", [7, [1, 2, 3], {"a": 1, "b": [4, 5]}]),
])
def test_jsonpath_selections(path: str, expected: Any) -> None:
    assert JsonPath.parse(path).select(DOC) == expected


@pytest.mark.parametrize(("path", "message"), [
    ("id", "must start with '$'"),
    ("$.", "expected a member name after '.' at position 2"),
    ("$[1", "'[' at position 1 is never closed"),
    ("$[]", "empty selector in brackets"),
    ("$[a]", "expected indexes, slices or quoted names"),
    ("$[1:2:3]", "expected a slice like [start:end]"),
    ("$['a',1]", "expected quoted names like ['a','b']"),
    ("$..id", "expected a member name after '.'"),
    ("$?(@.x)", "unexpected '?' at position 1"),
])
def test_jsonpath_syntax_errors(path: str, message: str) -> None:
    with pytest.raises(JsonPathSyntaxError, match=re.escape(message)):
        JsonPath.parse(path)


@pytest.mark.parametrize(("path", "value", "message"), [
    ("$.nope", DOC, "the record has no member 'nope'"),
    ("$.id.x", DOC, "cannot select member 'x' of a int"),
    ("$[3]", [1, 2, 3], "index 3 is outside the record's 3 elements"),
    ("$[-4]", [1, 2, 3], "index -4 is outside"),
    ("$[0,5]", [1, 2, 3], "index 5 is outside"),
    ("$[0]", {"a": 1}, "indexes need an array, got an object"),
    ("$.*", 3, "'*' needs an object or an array, got a int"),
])
def test_jsonpath_selection_errors(path: str, value: Any, message: str) -> None:
    with pytest.raises(JsonPathSelectError, match=re.escape(message)):
        JsonPath.parse(path).select(value)


def test_index_only_paths_are_what_csv_allows() -> None:
    assert JsonPath.parse("$[0,-1]").index_only and JsonPath.parse("$[*]").index_only
    assert not JsonPath.parse("$.a").index_only and not JsonPath.parse("$['a']").index_only


def processor(**dp: str) -> RecordProcessor:
    request = {"DataProcessing": dp, "TransformInput": {"ContentType": dp.pop("ct", "text/csv"), "SplitType": "Line"},
               "TransformOutput": {"Accept": dp.pop("accept", "text/csv"), "AssembleWith": "Line"}}
    proc = RecordProcessor.from_request(request)
    assert proc is not None
    return proc


def test_no_processor_when_data_processing_changes_nothing() -> None:
    base = {"TransformInput": {}, "TransformOutput": {}}
    assert RecordProcessor.from_request(base) is None
    assert RecordProcessor.from_request({**base, "DataProcessing": {"InputFilter": "$", "OutputFilter": "",
                                                                    "JoinSource": "None"}}) is None


def test_payloads_hold_filtered_records_and_keep_the_originals_for_the_join() -> None:
    proc = processor(InputFilter="$[1:]", JoinSource="Input")
    data = io.BytesIO(b"a,1,2\nb,3,4\nc,5,6\n")
    got = list(iter_processed_payloads(data, proc, split_type="Line", batch_strategy="MultiRecord", limit=8,
                                       uri="s3://b/x.csv"))
    assert got == [(b"1,2\n3,4\n", 2, [b"a,1,2\n", b"b,3,4\n"]), (b"5,6\n", 1, [b"c,5,6\n"])]
    assert proc.assemble([b"a,1,2\n", b"b,3,4\n"], b"3\n7\n", uri="s3://b/x.csv", first=1) == b"a,1,2,3\nb,3,4,7\n"


def test_the_record_as_read_and_as_filtered_must_fit_the_payload_limit() -> None:
    proc = processor(InputFilter="$[1:]")
    with pytest.raises(RecordTooLargeError, match=r"^s3://b/x.csv: record 2 is 8 bytes, over the payload limit "
                                                  r"of 6 bytes"):
        list(iter_processed_payloads(io.BytesIO(b"a,1\nb,123,4\n"), proc, split_type="Line",
                                     batch_strategy="SingleRecord", limit=6, uri="s3://b/x.csv"))
    proc = processor(InputFilter="$.a", ct="application/jsonlines", accept="application/jsonlines")
    with pytest.raises(RecordTooLargeError, match=r"^s3://b/x.jsonl: record 1 is 13 bytes, over the payload "
                                                  r"limit of 10 bytes"):  # 1e9 is written 1000000000.0
        list(iter_processed_payloads(io.BytesIO(b'{"a":1e9}\n'), proc, split_type="Line",
                                     batch_strategy="SingleRecord", limit=10, uri="s3://b/x.jsonl"))


def test_a_join_needs_one_answer_line_per_record() -> None:
    proc = processor(JoinSource="Input")
    with pytest.raises(DataProcessingError, match=r"^s3://b/x.csv: records 3-4: the model answered 2 records with "
                                                  r"1 lines; a join or an output filter needs one line per record"):
        proc.assemble([b"1\n", b"2\n"], b"[1, 2]\n", uri="s3://b/x.csv", first=3)


def test_a_json_join_needs_json_answers() -> None:
    proc = processor(JoinSource="Input", ct="application/jsonlines", accept="application/jsonlines")
    with pytest.raises(DataProcessingError, match=r"record 5: OutputFilter: the model's answer is not JSON"):
        proc.assemble([b'{"a":1}\n'], b"oops\n", uri="s3://b/x.jsonl", first=5)
    assert proc.assemble([b'{"a":"\xc3\xa9"}\n'], b"1\r\n", uri="u", first=1) == (
        '{"a":"é","SageMakerOutput":1}\n'.encode())


def test_csv_output_filter_without_a_join_applies_to_the_answer_row() -> None:
    proc = processor(OutputFilter="$[1]")
    assert proc.assemble([b"x\n", b"y\n"], b"0.1,0.9\n0.8,0.2\n", uri="u", first=1) == b"0.9\n0.2\n"
