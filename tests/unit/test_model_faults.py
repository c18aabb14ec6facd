"""Model faults and their documented outcomes, through the local engine and, where the fault only
shows there, through the publish step (``reconcile``/``publish_attempt``).

==================================  ==========================================================================
fault                               outcome
==================================  ==========================================================================
the model server dies mid-job       the object whose request killed it fails (connection reset/refused); the
                                    engine does not restart the model, so every later object fails too; the
                                    job is ``Failed`` naming the first; objects done before keep their ``.out``
the handler raises on every call    every object fails with the handler's message; no ``.out``; job ``Failed``
the model hangs                     each request is abandoned after ``InvocationsTimeoutInSeconds`` per attempt;
                                    its object fails with ``TimeoutError``; the others complete
too few / too many predictions      the engine writes what the model said (it cannot know); publish's
                                    ``reconcile`` fails naming the shard and both counts; nothing is published
                                    (with ``JoinSource``/``OutputFilter`` the engine itself fails the object)
garbage (not the expected CSV)      publish fails naming the shard: a blob without newlines is a count
                                    mismatch, a record with the wrong number of fields a width mismatch;
                                    nothing is published
==================================  ==========================================================================
"""

from __future__ import annotations

import logging
import re
import time
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

from airflow_bt.steps.publish import ReconcileError, publish_attempt, read_latest
from airflow_bt.steps.shard import shard_partition
from airflow_bt.storage import Storage, for_uri
from airflow_bt.transform.local_engine import run_transform_job


def rows(*values: str) -> bytes:
    return "".join(v + "\n" for v in values).encode()


# --- the runtime crashes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("retries", [0, 2])
def test_a_model_server_that_dies_fails_its_object_and_every_later_one(
        tmp_path: Path, retries: int, caplog: pytest.LogCaptureFixture) -> None:
    inp = write_files(tmp_path / "in", {"a.csv": rows("1", "2"), "b.csv": rows("3", "CRASH", "4"),
                                        "c.csv": rows("5")})
    req = transform_request(inp, (tmp_path / "out").as_uri(), ModelClientConfig={"InvocationsMaxRetries": retries})
    with caplog.at_level(logging.INFO, logger="faults"):
        result = run_transform_job(req, crashing_server_model(tmp_path), log=logging.getLogger("faults"))

    assert result["TransformJobStatus"] == "Failed"
    attempts = f"{retries + 1} attempt" + ("s" if retries else "")
    assert re.fullmatch(
        rf"{re.escape(inp)}b\.csv: the model failed request 1 \(records 1-3\) after {attempts}: "
        r"(ConnectionResetError|RemoteDisconnected|ConnectionRefusedError|BrokenPipeError): .+ "
        r"\(and 1 more object failed\)", result["FailureReason"]), result["FailureReason"]
    assert read_outputs(tmp_path / "out") == {"a.csv.out": rows("1", "2")}  # done before the crash: kept
    later = [m for m in caplog.messages if m.startswith("object 3 of 3 c.csv failed")]
    assert later and "ConnectionRefusedError" in later[0], caplog.messages  # not restarted
    assert result["LocalEngineStats"]["objects_failed"] == 2


def test_with_dead_letter_a_crashed_model_is_not_bisected(tmp_path: Path) -> None:
    inp = write_files(tmp_path / "in", {"a.csv": rows("3", "CRASH", "4"), "b.csv": rows("5", "6")})
    result = run_transform_job(transform_request(inp, (tmp_path / "out").as_uri()), crashing_server_model(tmp_path),
                               dead_letter=True)
    assert result["FailureReason"].endswith("; dead-letter gave up: the model no longer answers /ping: it looks "
                                            "crashed, not the data (and 1 more object failed)")
    assert read_outputs(tmp_path / "out") == {}  # no .out, and no errors/ blaming the records
    assert result["LocalEngineStats"]["rejected"] == 0


def test_a_handler_that_raises_fails_every_object_with_its_message(tmp_path: Path) -> None:
    inp = write_files(tmp_path / "in", {"a.csv": rows("1"), "b.csv": rows("2", "3")})
    result = run_transform_job(transform_request(inp, (tmp_path / "out").as_uri()),
                               handler_model(inline_handler(tmp_path, "raises", OUT_OF_MEMORY_HANDLER)))
    assert result["TransformJobStatus"] == "Failed"
    assert result["FailureReason"] == (f"{inp}a.csv: the model failed request 1 (records 1-1) after 1 attempt: "
                                       "RuntimeError: CUDA error: out of memory (and 1 more object failed)")
    assert read_outputs(tmp_path / "out") == {}


# --- the model hangs -------------------------------------------------------------------------------------


def test_a_hanging_request_times_out_per_attempt_and_fails_only_its_object(tmp_path: Path) -> None:
    inp = write_files(tmp_path / "in", {"a.csv": rows("1", "HANG"), "b.csv": rows("2")})
    req = transform_request(inp, (tmp_path / "out").as_uri(),
                            ModelClientConfig={"InvocationsTimeoutInSeconds": 1, "InvocationsMaxRetries": 1})
    started = time.monotonic()
    result = run_transform_job(req, handler_model(model_tarball(tmp_path, "behave")))
    elapsed = time.monotonic() - started
    assert result["FailureReason"] == (f"{inp}a.csv: the model failed request 1 (records 1-2) after 2 attempts: "
                                       "TimeoutError: no answer within InvocationsTimeoutInSeconds=1")
    assert read_outputs(tmp_path / "out") == {"b.csv.out": rows("2")}
    assert 2 <= elapsed < 6  # two attempts of 1 s, then the job goes on


def test_a_model_that_hangs_on_everything_still_ends_the_job(tmp_path: Path) -> None:
    inp = write_files(tmp_path / "in", {"a.csv": rows("HANG"), "b.csv": rows("HANG", "HANG")})
    req = transform_request(inp, (tmp_path / "out").as_uri(),
                            ModelClientConfig={"InvocationsTimeoutInSeconds": 1, "InvocationsMaxRetries": 0})
    started = time.monotonic()
    result = run_transform_job(req, handler_model(model_tarball(tmp_path, "behave")))
    assert time.monotonic() - started < 6  # one timeout per object (each abandoned call frees its slot)
    assert result["TransformJobStatus"] == "Failed"
    assert result["FailureReason"].endswith("TimeoutError: no answer within InvocationsTimeoutInSeconds=1 "
                                            "(and 1 more object failed)")
    assert read_outputs(tmp_path / "out") == {}


# --- wrong number of predictions, garbage: the engine cannot tell, publish must ----------------------------


SHORT = """
def model_fn(model_dir):
    return None


def transform_fn(model, data, content_type, accept):
    rows = data.decode().splitlines()
    return "".join("%g\\n" % sum(float(x) for x in row.split(",")) for row in rows[:-1])
"""
EXTRA = SHORT.replace("rows[:-1]", "rows + rows[:1]")
BLOB = """
def model_fn(model_dir):
    return None


def transform_fn(model, data, content_type, accept):
    return b"<html><body><h1>502 Bad Gateway</h1></body></html>"
"""
FIELDS = """
def model_fn(model_dir):
    return None


def transform_fn(model, data, content_type, accept):
    return "".join('{"score": 0.5, "label": 1}\\n' for _ in data.decode().splitlines())
"""


def score_shards(tmp_path: Path, source: str, *, dead_letter: bool = False
                 ) -> tuple[Storage, dict[str, Any], dict[str, Any]]:
    """Shard 10 CSV rows into 2 shards, score them with the handler ``source``; the store, shard summary, job."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.csv").write_text("id,x\n" + "".join(f"{i},{i}\n" for i in range(10)))
    base = tmp_path.as_uri()
    store = for_uri(base)
    summary = shard_partition(store, f"{base}/in/", f"{base}/w/shard-1/", f"{base}/w/manifest",
                              f"{base}/w/summary.json", min_shards=2)
    req = transform_request(f"{base}/w/manifest", f"{base}/w/transform-1/", S3DataType="ManifestFile")
    result = run_transform_job(req, handler_model(inline_handler(tmp_path, "fault", source)), dead_letter=dead_letter)
    return store, summary, result


def publish(tmp_path: Path, store: Storage, summary: dict[str, Any]) -> dict[str, Any]:
    base = tmp_path.as_uri()
    return publish_attempt(store, summary, f"{base}/w/transform-1/", f"{base}/out/dt=1/run-1/",
                           f"{base}/out/dt=1/_LATEST.json", prediction_columns=["p"])


def assert_nothing_published(tmp_path: Path, store: Storage) -> None:
    attempt = tmp_path / "out" / "dt=1" / "run-1"
    assert not (attempt / "_SUCCESS").exists() and not (attempt / "_manifest.json").exists()
    assert read_latest(store, f"{tmp_path.as_uri()}/out/dt=1") is None


@pytest.mark.parametrize(("source", "got"), [(SHORT, "5"), (EXTRA, "7")], ids=["too-few", "too-many"])
@pytest.mark.parametrize("dead_letter", [False, True])
def test_the_wrong_number_of_predictions_fails_publish_naming_the_shard_and_counts(
        tmp_path: Path, source: str, got: str, dead_letter: bool) -> None:
    store, summary, result = score_shards(tmp_path, source, dead_letter=dead_letter)
    assert result["TransformJobStatus"] == "Completed"  # the engine cannot know how many answers are right
    assert result["LocalEngineStats"]["rejected"] == 0  # answers, even wrong ones, are not rejections
    shard = summary["shards"][0]
    assert shard["records"] == 6
    with pytest.raises(ReconcileError, match=rf"shard {re.escape(shard['key'])}: 6 input records but {got} "
                                             "predictions"):
        publish(tmp_path, store, summary)
    assert_nothing_published(tmp_path, store)


def test_with_a_join_the_engine_itself_fails_an_object_with_the_wrong_number(tmp_path: Path) -> None:
    inp = write_files(tmp_path / "in", {"a.csv": rows("1,1", "2,2", "3,3")})
    req = transform_request(inp, (tmp_path / "out").as_uri(), DataProcessing={"JoinSource": "Input"})
    result = run_transform_job(req, handler_model(inline_handler(tmp_path, "short", SHORT)))
    assert result["FailureReason"] == (f"{inp}a.csv: records 1-3: the model answered 3 records with 2 lines; a join "
                                       "or an output filter needs one line per record (or BatchStrategy=SingleRecord)")
    assert read_outputs(tmp_path / "out") == {}


def test_garbage_without_newlines_fails_publish_as_a_count_mismatch(tmp_path: Path) -> None:
    store, summary, result = score_shards(tmp_path, BLOB)
    assert result["TransformJobStatus"] == "Completed"
    shard = summary["shards"][0]
    with pytest.raises(ReconcileError, match=rf"shard {re.escape(shard['key'])}: 6 input records but 1 predictions"):
        publish(tmp_path, store, summary)
    assert_nothing_published(tmp_path, store)


def test_garbage_with_the_wrong_fields_fails_publish_naming_the_shard(tmp_path: Path) -> None:
    store, summary, result = score_shards(tmp_path, FIELDS)
    assert result["TransformJobStatus"] == "Completed"
    shard = summary["shards"][0]
    with pytest.raises(ReconcileError, match=rf"shard {re.escape(shard['key'])} prediction 1: the model returned 2 "
                                             r"value\(s\) .* but prediction_columns names 1"):
        publish(tmp_path, store, summary)
    assert_nothing_published(tmp_path, store)
    assert not list((tmp_path / "out").rglob("part-*"))
