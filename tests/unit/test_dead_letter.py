"""Dead-letter for model failures in the local engine (opt-in ``dead_letter=True``).

A request the model fails is bisected until the failing records are isolated; those go to
``<S3OutputPath>/errors/<key>.jsonl`` (committed before ``<key>.out``), the rest are scored, and
bisection gives up (the object fails as it would without dead-letter) when the model, not the
data, looks broken. The ``behave`` fixture model sums each CSV row and raises
``ValueError("cannot score row '<row>'")`` for the whole request when a row contains ``BAD``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from engine_helpers import (
    OUT_OF_MEMORY_HANDLER,
    crashing_server_model,
    handler_model,
    inline_handler,
    model_tarball,
    read_outputs,
    transform_request,
    write_files,
)

from airflow_bt.storage.local import LocalStorage
from airflow_bt.transform import dead_letter
from airflow_bt.transform.backends.local import run_local
from airflow_bt.transform.local_engine import run_transform_job

BROKEN = "the model, not the data, looks broken"
HUNG = "the model looks hung, not the data"


@pytest.fixture
def behave(tmp_path: Path) -> dict[str, Any]:
    return handler_model(model_tarball(tmp_path, "behave"))


def rows(*values: str) -> bytes:
    return "".join(v + "\n" for v in values).encode()


def errors_of(out: Path, key: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "errors" / f"{key}.jsonl").read_text().splitlines()]


def rejection(obj: str, record: int, row: str) -> dict[str, Any]:
    return {"object": obj, "record": record, "message": f"ValueError: cannot score row {row!r}", "input": row}


def test_rejected_records_go_to_errors_and_the_rest_are_scored_in_order(
        tmp_path: Path, behave: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    good = [str(i) for i in range(1, 21)]
    a = [*good[:3], "BAD4", *good[4:16], "1,BAD", "BAD18", *good[18:]]
    inp = write_files(tmp_path / "in", {"a.csv": rows(*a), "b.csv": rows("5", "6"), "sub/c.csv": rows("BAD", "7")})
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO, logger="dl"):
        result = run_transform_job(transform_request(inp, out.as_uri()), behave, dead_letter=True,
                                   log=logging.getLogger("dl"))

    assert result["TransformJobStatus"] == "Completed", result.get("FailureReason")
    outputs = read_outputs(out)
    assert outputs["a.csv.out"] == rows(*(r for r in a if "BAD" not in r))  # 17 = 20 records - 3 rejected
    assert outputs["b.csv.out"] == rows("5", "6")
    assert outputs["sub/c.csv.out"] == rows("7")
    assert errors_of(out, "a.csv") == [rejection(f"{inp}a.csv", 4, "BAD4"), rejection(f"{inp}a.csv", 17, "1,BAD"),
                                       rejection(f"{inp}a.csv", 18, "BAD18")]
    assert errors_of(out, "sub/c.csv") == [rejection(f"{inp}sub/c.csv", 1, "BAD")]
    assert not (out / "errors" / "b.csv.jsonl").exists()
    stats = result["LocalEngineStats"]
    assert (stats["records"], stats["rejected"], stats["rejected_objects"], stats["objects_failed"]) == (20, 4, 2, 0)

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"dead-letter: 3 record(s) of {inp}a.csv rejected by the model (first: record 4: ValueError: cannot score "
        f"row 'BAD4'); written to {out.as_uri()}/errors/a.csv.jsonl",
        f"dead-letter: 1 record(s) of {inp}sub/c.csv rejected by the model (first: record 1: ValueError: cannot "
        f"score row 'BAD'); written to {out.as_uri()}/errors/sub/c.csv.jsonl",
    ]
    assert (f"dead-letter: 4 record(s) of 2 object(s) rejected by the model; errors under {out.as_uri()}/errors/"
            in caplog.messages)


def test_off_by_default_a_failed_request_fails_its_object_as_before(tmp_path: Path, behave: dict[str, Any]) -> None:
    inp = write_files(tmp_path / "in", {"a.csv": rows("1", "BAD", "3"), "b.csv": rows("4")})
    default = run_transform_job(transform_request(inp, (tmp_path / "o1").as_uri()), behave)
    off = run_local(transform_request(inp, (tmp_path / "o2").as_uri()), behave, aws_conn_id=None,
                    log=logging.getLogger("dl"), dead_letter=False)
    for result in (default, off):
        assert result["FailureReason"] == (f"{inp}a.csv: the model failed request 1 (records 1-3) after 1 attempt: "
                                           "ValueError: cannot score row 'BAD'")
        assert result["LocalEngineStats"]["rejected"] == result["LocalEngineStats"]["rejected_objects"] == 0
    assert read_outputs(tmp_path / "o1") == read_outputs(tmp_path / "o2") == {"b.csv.out": rows("4")}


def test_run_local_passes_dead_letter_on(tmp_path: Path, behave: dict[str, Any]) -> None:
    inp = write_files(tmp_path / "in", {"a.csv": rows("1", "BAD", "3")})
    result = run_local(transform_request(inp, (tmp_path / "out").as_uri()), behave, aws_conn_id=None,
                       log=logging.getLogger("dl"), dead_letter=True, dead_letter_max_records=1)
    assert result["TransformJobStatus"] == "Completed"
    assert read_outputs(tmp_path / "out")["a.csv.out"] == rows("1", "3")


@contextlib.contextmanager
def commit_order(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The URIs local create-only writes commit, in order."""
    order: list[str] = []
    original = LocalStorage.open_write

    @contextlib.contextmanager
    def recording(self: LocalStorage, uri: str, *, durable: bool = True) -> Iterator[Any]:
        with original(self, uri, durable=durable) as out:
            yield out
        order.append(uri)

    monkeypatch.setattr(LocalStorage, "open_write", recording)
    yield order


def test_the_errors_object_is_committed_before_the_out_object(tmp_path: Path, behave: dict[str, Any],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    inp = write_files(tmp_path / "in", {"a.csv": rows("1", "BAD", "3"), "b.csv": rows("4")})
    out = (tmp_path / "out").as_uri()
    with commit_order(monkeypatch) as order:
        result = run_transform_job(transform_request(inp, out), behave, dead_letter=True)
    assert result["TransformJobStatus"] == "Completed"
    assert order == [f"{out}/errors/a.csv.jsonl", f"{out}/a.csv.out", f"{out}/b.csv.out"]


@pytest.mark.parametrize("strategy", ["SingleRecord", "MultiRecord"])
@pytest.mark.parametrize("concurrency", [1, 3])
def test_batching_and_concurrency_do_not_change_the_outcome(tmp_path: Path, behave: dict[str, Any], strategy: str,
                                                            concurrency: int) -> None:
    values = [str(i) if i % 7 else f"BAD{i}" for i in range(1, 41)]
    inp = write_files(tmp_path / "in", {"a.csv": rows(*values)})
    req = transform_request(inp, (tmp_path / "out").as_uri(), BatchStrategy=strategy,
                            MaxConcurrentTransforms=concurrency, MaxPayloadInMB=1)
    result = run_transform_job(req, behave, dead_letter=True)
    assert result["TransformJobStatus"] == "Completed", result.get("FailureReason")
    assert read_outputs(tmp_path / "out")["a.csv.out"] == rows(*(v for v in values if "BAD" not in v))
    assert [e["record"] for e in errors_of(tmp_path / "out", "a.csv")] == [7, 14, 21, 28, 35]


def test_split_type_none_rejects_the_whole_object_as_record_1(tmp_path: Path, behave: dict[str, Any]) -> None:
    inp = write_files(tmp_path / "in", {"a.csv": rows("1", "BAD"), "b.csv": rows("2", "3")})
    result = run_transform_job(transform_request(inp, (tmp_path / "out").as_uri(), SplitType="None"), behave,
                               dead_letter=True)
    assert result["TransformJobStatus"] == "Completed"
    assert read_outputs(tmp_path / "out")["a.csv.out"] == b""
    assert errors_of(tmp_path / "out", "a.csv") == [
        {"object": f"{inp}a.csv", "record": 1, "message": "ValueError: cannot score row 'BAD'", "input": "1\nBAD"}]
    assert read_outputs(tmp_path / "out")["b.csv.out"] == rows("2", "3")


def test_with_an_input_filter_and_join_the_original_records_are_bisected(tmp_path: Path,
                                                                         behave: dict[str, Any]) -> None:
    inp = write_files(tmp_path / "in", {"a.csv": rows("id1,1,2", "id2,BAD,1", "id3,3,4", "id4,5,BAD", "id5,0,1")})
    req = transform_request(inp, (tmp_path / "out").as_uri(),
                            DataProcessing={"InputFilter": "$[1:]", "JoinSource": "Input"})
    result = run_transform_job(req, behave, dead_letter=True)
    assert result["TransformJobStatus"] == "Completed", result.get("FailureReason")
    assert read_outputs(tmp_path / "out")["a.csv.out"] == rows("id1,1,2,3", "id3,3,4,7", "id5,0,1,1")
    assert errors_of(tmp_path / "out", "a.csv") == [
        {"object": f"{inp}a.csv", "record": 2, "message": "ValueError: cannot score row 'BAD,1'", "input": "id2,BAD,1"},
        {"object": f"{inp}a.csv", "record": 4, "message": "ValueError: cannot score row '5,BAD'", "input": "id4,5,BAD"},
    ]


def test_with_an_input_filter_only_the_errors_hold_the_records_as_read(tmp_path: Path,
                                                                       behave: dict[str, Any]) -> None:
    inp = write_files(tmp_path / "in", {"a.csv": rows("x,1", "y,BAD", "z,2")})
    req = transform_request(inp, (tmp_path / "out").as_uri(), DataProcessing={"InputFilter": "$[1]"})
    result = run_transform_job(req, behave, dead_letter=True)
    assert result["TransformJobStatus"] == "Completed", result.get("FailureReason")
    assert read_outputs(tmp_path / "out")["a.csv.out"] == rows("1", "2")
    assert [(e["record"], e["input"]) for e in errors_of(tmp_path / "out", "a.csv")] == [(2, "y,BAD")]


POISON_RECORDIO = """
def model_fn(model_dir):
    return None


def transform_fn(model, data, content_type, accept):
    if b"POISON" in data:
        raise ValueError("poisoned request of %d bytes" % len(data))
    return "ok %d\\n" % len(data)
"""


def recordio(body: bytes) -> bytes:
    return struct.pack("<II", 0xCED7230A, len(body)) + body + b"\0" * (-len(body) % 4)


def test_binary_records_are_bisected_by_their_framing(tmp_path: Path) -> None:
    records = [recordio(b"r1"), recordio(b"r2"), recordio(b"POISON"), recordio(b"r4")]
    inp = write_files(tmp_path / "in", {"a.rec": b"".join(records)})
    req = transform_request(inp, (tmp_path / "out").as_uri(), SplitType="RecordIO",
                            ContentType="application/x-recordio")
    result = run_transform_job(req, handler_model(inline_handler(tmp_path, "poison", POISON_RECORDIO)),
                               dead_letter=True)
    assert result["TransformJobStatus"] == "Completed", result.get("FailureReason")
    # records 1-2 answered as one request, record 4 alone: the model's answers, in input order
    assert read_outputs(tmp_path / "out")["a.rec.out"] == b"ok 24\nok 12\n"
    [error] = errors_of(tmp_path / "out", "a.rec")
    assert (error["record"], error["message"]) == (3, "ValueError: poisoned request of 16 bytes")
    assert error["input"] == records[2].decode("utf-8", errors="replace")


def test_a_model_that_rejects_every_record_of_a_request_fails_the_object(tmp_path: Path,
                                                                         behave: dict[str, Any]) -> None:
    inp = write_files(tmp_path / "in", {"a.csv": rows("1", "2"), "b.csv": rows("BAD1", "BAD2", "BAD3", "BAD4")})
    result = run_transform_job(transform_request(inp, (tmp_path / "out").as_uri()), behave, dead_letter=True)
    assert result["TransformJobStatus"] == "Failed"
    assert result["FailureReason"] == (
        f"{inp}b.csv: the model failed request 1 (records 1-4) after 1 attempt: ValueError: cannot score row "
        f"'BAD1'; dead-letter gave up: the model rejected all 4 records of the request: {BROKEN}")
    assert read_outputs(tmp_path / "out") == {"a.csv.out": rows("1", "2")}  # no .out, no errors for b.csv
    assert result["LocalEngineStats"]["rejected"] == 0


def test_a_model_that_rejects_every_record_of_an_object_one_by_one_fails_it(tmp_path: Path) -> None:
    inp = write_files(tmp_path / "in", {"a.csv": rows("1", "2", "3"), "b.csv": rows("4")})
    req = transform_request(inp, (tmp_path / "out").as_uri(), BatchStrategy="SingleRecord")
    model = handler_model(inline_handler(tmp_path, "oom", OUT_OF_MEMORY_HANDLER))
    result = run_transform_job(req, model, dead_letter=True)
    assert result["TransformJobStatus"] == "Failed"
    assert result["FailureReason"] == (
        f"{inp}a.csv: the model failed request 1 (records 1-1) after 1 attempt: RuntimeError: CUDA error: out of "
        f"memory; dead-letter gave up: the model rejected all 3 records of the object: {BROKEN}")
    # b.csv's only record is rejected like any single record: an empty .out and its errors file
    assert read_outputs(tmp_path / "out") == {
        "b.csv.out": b"",
        "errors/b.csv.jsonl": json.dumps({"object": f"{inp}b.csv", "record": 1,
                                          "message": "RuntimeError: CUDA error: out of memory",
                                          "input": "4"}).encode() + b"\n"}


def test_more_rejections_than_the_limit_fail_the_object_that_exceeds_it(tmp_path: Path,
                                                                         behave: dict[str, Any]) -> None:
    inp = write_files(tmp_path / "in", {"a.csv": rows("1", "BAD2", "3", "BAD4"), "b.csv": rows("5", "BAD6", "7"),
                                        "c.csv": rows("8")})
    result = run_transform_job(transform_request(inp, (tmp_path / "out").as_uri()), behave, dead_letter=True,
                               dead_letter_max_records=2)
    assert result["TransformJobStatus"] == "Failed"
    assert result["FailureReason"] == (
        f"{inp}b.csv: the model failed request 1 (records 1-3) after 1 attempt: ValueError: cannot score row "
        f"'BAD6'; dead-letter gave up: more than 2 records rejected by the model in this job: {BROKEN}")
    assert read_outputs(tmp_path / "out") == {
        "a.csv.out": rows("1", "3"), "c.csv.out": rows("8"),
        "errors/a.csv.jsonl": (tmp_path / "out/errors/a.csv.jsonl").read_bytes()}
    assert [e["record"] for e in errors_of(tmp_path / "out", "a.csv")] == [2, 4]
    stats = result["LocalEngineStats"]
    assert (stats["rejected"], stats["rejected_objects"], stats["objects_failed"]) == (2, 1, 1)


def test_one_object_over_the_limit_fails_alone(tmp_path: Path, behave: dict[str, Any]) -> None:
    values = [f"BAD{i}" if i % 2 else str(i) for i in range(1, 11)]  # 5 of 10 rejected
    inp = write_files(tmp_path / "in", {"a.csv": rows(*values)})
    result = run_transform_job(transform_request(inp, (tmp_path / "out").as_uri()), behave, dead_letter=True,
                               dead_letter_max_records=4)
    assert result["FailureReason"].endswith(f"dead-letter gave up: more than 4 records rejected by the model in "
                                            f"this job: {BROKEN}")
    assert read_outputs(tmp_path / "out") == {}


def test_instances_share_the_limit(tmp_path: Path, behave: dict[str, Any]) -> None:
    inp = write_files(tmp_path / "in", {"a.csv": rows("1", "BAD"), "b.csv": rows("2", "BAD")})
    req = transform_request(inp, (tmp_path / "out").as_uri(), InstanceCount=2)
    result = run_transform_job(req, behave, dead_letter=True, dead_letter_max_records=1)
    assert result["TransformJobStatus"] == "Failed"
    assert "more than 1 records rejected by the model in this job" in result["FailureReason"]
    stats = result["LocalEngineStats"]
    assert (stats["objects_failed"], stats["rejected"], stats["rejected_objects"]) == (1, 1, 1)
    assert len([k for k in read_outputs(tmp_path / "out") if k.endswith(".out")]) == 1


def timed_out(record: int, row: str, obj: str) -> dict[str, Any]:
    return {"object": obj, "record": record, "message": "TimeoutError: no answer within InvocationsTimeoutInSeconds=1",
            "input": row}


def test_a_record_that_hangs_the_model_is_isolated_in_few_timeouts(tmp_path: Path, behave: dict[str, Any]) -> None:
    values = ["1", "2", "HANG", "4"]
    inp = write_files(tmp_path / "in", {"a.csv": rows(*values)})
    req = transform_request(inp, (tmp_path / "out").as_uri(), ModelClientConfig={"InvocationsTimeoutInSeconds": 1,
                                                                                 "InvocationsMaxRetries": 0})
    started = time.monotonic()
    result = run_transform_job(req, behave, dead_letter=True)
    elapsed = time.monotonic() - started
    assert result["TransformJobStatus"] == "Completed", result.get("FailureReason")
    assert read_outputs(tmp_path / "out")["a.csv.out"] == rows(*(v for v in values if v != "HANG"))
    assert errors_of(tmp_path / "out", "a.csv") == [timed_out(3, "HANG", f"{inp}a.csv")]
    assert elapsed < 6  # the batch, then one timed-out half per level (4 -> 2 -> 1): 3 timeouts of 1 s


def test_a_hung_model_is_not_bisected(tmp_path: Path, behave: dict[str, Any]) -> None:
    inp = write_files(tmp_path / "in", {"a.csv": rows(*["HANG"] * 64)})
    req = transform_request(inp, (tmp_path / "out").as_uri(), ModelClientConfig={"InvocationsTimeoutInSeconds": 1,
                                                                                 "InvocationsMaxRetries": 0})
    started = time.monotonic()
    result = run_transform_job(req, behave, dead_letter=True)
    assert time.monotonic() - started < 6  # the request and its two halves: 3 timeouts
    assert result["FailureReason"] == (
        f"{inp}a.csv: the model failed request 1 (records 1-64) after 1 attempt: TimeoutError: no answer within "
        f"InvocationsTimeoutInSeconds=1; dead-letter gave up: both halves of records 1-64 timed out: {HUNG}")
    assert read_outputs(tmp_path / "out") == {}


def test_single_record_requests_of_a_hung_model_give_up_after_two_in_a_row(tmp_path: Path,
                                                                           behave: dict[str, Any]) -> None:
    inp = write_files(tmp_path / "in", {"a.csv": rows("1", "HANG", "2", "HANG", "HANG", "HANG", "3")})
    req = transform_request(inp, (tmp_path / "out").as_uri(), BatchStrategy="SingleRecord",
                            ModelClientConfig={"InvocationsTimeoutInSeconds": 1, "InvocationsMaxRetries": 0})
    started = time.monotonic()
    result = run_transform_job(req, behave, dead_letter=True)
    assert time.monotonic() - started < 6  # 3 timeouts, not 4
    assert result["FailureReason"] == (
        f"{inp}a.csv: the model failed request 5 (records 5-5) after 1 attempt: TimeoutError: no answer within "
        f"InvocationsTimeoutInSeconds=1; dead-letter gave up: 2 single-record requests in a row timed out: {HUNG}")
    assert read_outputs(tmp_path / "out") == {}


def test_timeouts_while_isolating_one_object_are_bounded(tmp_path: Path, behave: dict[str, Any],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dead_letter, "MAX_TIMEOUTS_PER_OBJECT", 1)  # 10 in earnest: 10 s here
    inp = write_files(tmp_path / "in", {"a.csv": rows("1", "HANG", "3", "4")})
    req = transform_request(inp, (tmp_path / "out").as_uri(), ModelClientConfig={"InvocationsTimeoutInSeconds": 1,
                                                                                 "InvocationsMaxRetries": 0})
    result = run_transform_job(req, behave, dead_letter=True)
    # the request, records 1-2 (records 3-4 answer), record 1 answers, record 2: the second timeout while isolating
    assert result["FailureReason"].endswith(f"dead-letter gave up: more than 1 calls timed out while isolating the "
                                            f"rejected records: {HUNG}")
    assert read_outputs(tmp_path / "out") == {}


def test_a_model_that_crashes_while_records_are_isolated_gives_up(tmp_path: Path) -> None:
    # the server answers the request with HTTP 400 for BAD (first row), then dies on the half holding CRASH
    inp = write_files(tmp_path / "in", {"a.csv": rows("BAD", "1", "CRASH", "2")})
    result = run_transform_job(transform_request(inp, (tmp_path / "out").as_uri()), crashing_server_model(tmp_path),
                               dead_letter=True)
    assert result["FailureReason"].startswith(f"{inp}a.csv: the model failed request 1 (records 1-4) after 1 "
                                              f"attempt: ModelInvocationError: HTTP 400 from http://127.0.0.1:")
    assert result["FailureReason"].endswith("dead-letter gave up: the model no longer answers /ping: it looks "
                                            "crashed, not the data")
    assert read_outputs(tmp_path / "out") == {}
    assert result["LocalEngineStats"]["rejected"] == 0


def test_the_limit_must_not_be_negative(tmp_path: Path, behave: dict[str, Any]) -> None:
    inp = write_files(tmp_path / "in", {"a.csv": rows("1")})
    with pytest.raises(ValueError, match="dead_letter_max_records must be >= 0, got -1"):
        run_transform_job(transform_request(inp, (tmp_path / "out").as_uri()), behave, dead_letter=True,
                          dead_letter_max_records=-1)
