"""Layer 3: the local engine and the Python handler runtime, on file:// (and once s3://) URIs."""

from __future__ import annotations

import gzip
import io
import json
import logging
import os
import pickle
import re
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
from engine_helpers import handler_model as model_request
from engine_helpers import model_tarball
from engine_helpers import read_outputs as outputs
from engine_helpers import transform_request as job
from engine_helpers import write_files as write

from airflow_bt.transform import TransformSpecError
from airflow_bt.transform.instance import (
    Event,
    Instance,
    InstanceDone,
    InstanceFailed,
    InstanceSpec,
    InstanceStarted,
    ObjectFinished,
    ObjectProgress,
)
from airflow_bt.transform.local_engine import _Monitor, run_transform_job
from airflow_bt.transform.plan import InputObject, assign_instances
from airflow_bt.transform.runtime import (
    ModelRuntimeError,
    PythonHandlerRuntime,
    UnsafeArchiveError,
    safe_extract_tar,
)

MODELS = Path(__file__).resolve().parent.parent / "fixtures" / "models"


def uri(path: Path) -> str:
    return path.as_uri()


@pytest.fixture
def rowsum(tmp_path: Path) -> dict[str, Any]:
    return model_request(model_tarball(tmp_path, "rowsum"))


@pytest.mark.parametrize(("strategy", "assemble", "expected"), [
    ("SingleRecord", "Line", b"3\n7\n11\n"),
    ("SingleRecord", "None", b"3711"),
    ("MultiRecord", "Line", b"3\n7\n11\n"),
    ("MultiRecord", "None", b"3\n7\n11"),
])
def test_batch_strategy_and_assembly(tmp_path: Path, rowsum: dict[str, Any], strategy: str, assemble: str,
                                     expected: bytes) -> None:
    inp = write(tmp_path / "in", {"a.csv": b"1,2\n3,4\n5,6\n"})
    result = run_transform_job(job(inp, uri(tmp_path / "out"), BatchStrategy=strategy, AssembleWith=assemble),
                               rowsum)
    assert result["TransformJobStatus"] == "Completed", result.get("FailureReason")
    assert outputs(tmp_path / "out") == {"a.csv.out": expected}
    stats = result["LocalEngineStats"]
    assert stats["records"] == 3 and stats["requests"] == (3 if strategy == "SingleRecord" else 1)
    assert stats["bytes_in"] == 12 and stats["objects"] == 1 and stats["objects_failed"] == 0


def test_input_without_trailing_newline(tmp_path: Path, rowsum: dict[str, Any]) -> None:
    inp = write(tmp_path / "in", {"a.csv": b"1,2\n3,4"})
    run_transform_job(job(inp, uri(tmp_path / "out"), BatchStrategy="MultiRecord"), rowsum)
    assert outputs(tmp_path / "out") == {"a.csv.out": b"3\n7\n"}


def test_nested_keys_are_mirrored_and_empty_objects_give_empty_outputs(tmp_path: Path,
                                                                        rowsum: dict[str, Any]) -> None:
    inp = write(tmp_path / "in", {"a.csv": b"1\n", "sub/dir/b.csv": b"2,2\n", "sub/empty.csv": b""})
    result = run_transform_job(job(inp, uri(tmp_path / "out") + "/"), rowsum)
    assert result["TransformJobStatus"] == "Completed"
    assert outputs(tmp_path / "out") == {"a.csv.out": b"1\n", "sub/dir/b.csv.out": b"4\n",
                                         "sub/empty.csv.out": b""}


def test_manifest_input(tmp_path: Path, rowsum: dict[str, Any]) -> None:
    data = write(tmp_path / "data", {"x/a.csv": b"1,1\n", "b.csv": b"5\n", "ignored.csv": b"9\n"})
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps([{"prefix": data}, "x/a.csv", "b.csv"]))
    req = job(uri(manifest), uri(tmp_path / "out"))
    req["TransformInput"]["DataSource"]["S3DataSource"]["S3DataType"] = "ManifestFile"
    result = run_transform_job(req, rowsum)
    assert result["TransformJobStatus"] == "Completed"
    assert outputs(tmp_path / "out") == {"b.csv.out": b"5\n", "x/a.csv.out": b"2\n"}


def test_manifest_naming_a_missing_object_fails_before_anything_runs(tmp_path: Path, rowsum: dict[str, Any]
                                                                     ) -> None:
    data = write(tmp_path / "data", {"a.csv": b"1,1\n"})
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps([{"prefix": data}, "a.csv", "gone.csv"]))
    req = job(uri(manifest), uri(tmp_path / "out"))
    req["TransformInput"]["DataSource"]["S3DataSource"]["S3DataType"] = "ManifestFile"
    result = run_transform_job(req, rowsum)
    assert result["TransformJobStatus"] == "Failed"
    assert re.search(r"manifest .*manifest\.json names 'gone\.csv', but .*/data/gone\.csv does not exist; "
                     r"nothing was processed", result["FailureReason"])
    assert outputs(tmp_path / "out") == {}  # not even a.csv ran


def test_gzip_input(tmp_path: Path, rowsum: dict[str, Any]) -> None:
    inp = write(tmp_path / "in", {"a.csv.gz": gzip.compress(b"1,2\n3,4\n")})
    result = run_transform_job(job(inp, uri(tmp_path / "out"), CompressionType="Gzip"), rowsum)
    assert outputs(tmp_path / "out") == {"a.csv.gz.out": b"3\n7\n"}
    assert result["LocalEngineStats"]["bytes_in"] == (tmp_path / "in" / "a.csv.gz").stat().st_size


def test_failing_object_gets_no_output_and_fails_the_job(tmp_path: Path, rowsum: dict[str, Any]) -> None:
    inp = write(tmp_path / "in", {"a.csv": b"1\n", "b.csv": b"1\nBAD,2\n3\n", "c.csv": b"4\n"})
    result = run_transform_job(job(inp, uri(tmp_path / "out"), BatchStrategy="SingleRecord"), rowsum)
    assert result["TransformJobStatus"] == "Failed"
    assert outputs(tmp_path / "out") == {"a.csv.out": b"1\n", "c.csv.out": b"4\n"}
    reason = result["FailureReason"]
    assert reason.startswith(uri(tmp_path / "in" / "b.csv") + ": the model failed request 2 (records 2-2)")
    assert "cannot score row 'BAD,2'" in reason
    assert result["LocalEngineStats"]["objects_failed"] == 1
    assert not list((tmp_path / "out").glob(".airflow-bt-tmp-*"))


def test_requests_are_retried_three_times_by_default(tmp_path: Path, rowsum: dict[str, Any]) -> None:
    inp = write(tmp_path / "in", {"a.csv": b"BAD\n"})
    req = job(inp, uri(tmp_path / "out"))
    del req["ModelClientConfig"]
    result = run_transform_job(req, rowsum)
    assert "after 4 attempts: ValueError: cannot score row 'BAD'" in result["FailureReason"]


def test_record_too_large_fails_its_object(tmp_path: Path, rowsum: dict[str, Any]) -> None:
    big = b"1," * (600 * 1024) + b"1\n"
    inp = write(tmp_path / "in", {"a.csv": b"1\n" + big, "b.csv": b"2\n"})
    result = run_transform_job(job(inp, uri(tmp_path / "out"), MaxPayloadInMB=1), rowsum)
    assert result["TransformJobStatus"] == "Failed"
    assert result["FailureReason"].startswith(uri(tmp_path / "in" / "a.csv") + ": record 2 is ")
    assert "(MaxPayloadInMB=1)" in result["FailureReason"]
    assert outputs(tmp_path / "out") == {"b.csv.out": b"2\n"}


def test_payload_boundaries_at_one_megabyte(tmp_path: Path) -> None:
    row = b"x" * 99 + b"\n"
    inp = write(tmp_path / "in", {"a.csv": row * 20_000})
    probe = model_request(model_tarball(tmp_path, "probe"))
    req = job(inp, uri(tmp_path / "out"), MaxPayloadInMB=1, MaxConcurrentTransforms=3)
    result = run_transform_job(req, probe)
    answers = [json.loads(line) for line in (tmp_path / "out" / "a.csv.out").read_bytes().splitlines()]
    per_payload = (1024 * 1024) // 100
    assert [(a["n"], a["bytes"]) for a in answers] == [(per_payload, per_payload * 100),
                                                       (20_000 - per_payload, (20_000 - per_payload) * 100)]
    assert answers[0]["ct"] == "text/csv" and answers[0]["accept"] == "text/csv"
    assert result["MaxConcurrentTransforms"] == 3 and result["MaxPayloadInMB"] == 1


def test_concurrent_requests_keep_input_order(tmp_path: Path, rowsum: dict[str, Any]) -> None:
    rows = b"".join(f"{i},0\n".encode() for i in range(300))
    inp = write(tmp_path / "in", {"a.csv": rows})
    result = run_transform_job(job(inp, uri(tmp_path / "out"), BatchStrategy="SingleRecord",
                                   MaxConcurrentTransforms=8), rowsum)
    assert result["TransformJobStatus"] == "Completed"
    assert (tmp_path / "out" / "a.csv.out").read_bytes() == b"".join(f"{i}\n".encode() for i in range(300))


def test_unset_knobs_come_from_execution_parameters_then_defaults(tmp_path: Path) -> None:
    inp = write(tmp_path / "in", {"a.csv": b"1\n2\n"})
    tarball = model_tarball(tmp_path, "probe")
    params = json.dumps({"BatchStrategy": "SingleRecord", "MaxPayloadInMB": 2, "MaxConcurrentTransforms": 5})
    probe = model_request(tarball, PROBE_EXEC_PARAMS=params)
    result = run_transform_job(job(inp, uri(tmp_path / "o1")), probe)
    assert (result["BatchStrategy"], result["MaxPayloadInMB"], result["MaxConcurrentTransforms"]) == (
        "SingleRecord", 2, 5)
    assert [json.loads(x)["n"] for x in (tmp_path / "o1" / "a.csv.out").read_bytes().splitlines()] == [1, 1]

    # The request wins over the container; 0 concurrent transforms means "unset".
    result = run_transform_job(job(inp, uri(tmp_path / "o2"), BatchStrategy="MultiRecord",
                                   MaxConcurrentTransforms=0), probe)
    assert (result["BatchStrategy"], result["MaxPayloadInMB"], result["MaxConcurrentTransforms"]) == (
        "MultiRecord", 2, 5)
    assert [json.loads(x)["n"] for x in (tmp_path / "o2" / "a.csv.out").read_bytes().splitlines()] == [2]

    result = run_transform_job(job(inp, uri(tmp_path / "o3")), model_request(tarball))
    assert (result["BatchStrategy"], result["MaxPayloadInMB"], result["MaxConcurrentTransforms"]) == (
        "MultiRecord", 6, 1)


def test_two_instances_write_the_same_bytes_as_one(tmp_path: Path, rowsum: dict[str, Any]) -> None:
    files = {f"p/part-{i}.csv": b"".join(f"{i},{j}\n".encode() for j in range(50 * (i + 1)))
             for i in range(4)}
    files["p/part-9.csv"] = b"1\nBAD\n"
    inp = write(tmp_path / "in", files)
    one = run_transform_job(job(inp, uri(tmp_path / "one")), rowsum)
    two = run_transform_job(job(inp, uri(tmp_path / "two"), InstanceCount=2), rowsum)
    assert outputs(tmp_path / "one") == outputs(tmp_path / "two")
    assert len(outputs(tmp_path / "two")) == 4
    for result in (one, two):
        assert result["TransformJobStatus"] == "Failed"
        assert result["FailureReason"].startswith(uri(tmp_path / "in" / "p" / "part-9.csv"))
        assert result["LocalEngineStats"]["records"] == 50 * (1 + 2 + 3 + 4)  # scored records only


def test_assign_instances_balances_bytes_and_keeps_order() -> None:
    objs = [InputObject(i, f"file:///in/{k}", k, f"file:///out/{k}.out", s)
            for i, (k, s) in enumerate([("a", 10), ("b", 50), ("c", 20), ("d", 30)])]
    groups = assign_instances(objs, 2)
    assert [[o.key for o in g] for g in groups] == [["a", "b"], ["c", "d"]]
    assert [[o.key for o in g] for g in assign_instances(objs, 9)] == [["b"], ["d"], ["c"], ["a"]]
    unknown = [InputObject(i, o.uri, o.key, o.out_uri) for i, o in enumerate(objs)]
    assert [[o.key for o in g] for g in assign_instances(unknown, 3)] == [["a", "d"], ["b"], ["c"]]


def test_instance_events_pickle_and_the_monitor_dispatches_them_by_type(tmp_path: Path, rowsum: dict[str, Any]) -> None:
    """The events cross a multiprocessing queue from the instance processes: they must survive pickling."""
    inp = write(tmp_path / "in", {"a.csv": b"1\n2\n"})
    req = job(inp, uri(tmp_path / "out"))
    obj = InputObject(0, f"{inp}a.csv", "a.csv", uri(tmp_path / "out" / "a.csv.out"))
    events: list[Event] = []
    Instance(InstanceSpec(0, req, rowsum, [obj]), events.append).run()
    assert [type(e) for e in events] == [InstanceStarted, ObjectFinished, InstanceDone]
    assert [pickle.loads(pickle.dumps(e)) for e in events] == events
    finished = events[1]
    assert isinstance(finished, ObjectFinished) and finished.result.records == 2 and finished.result.error is None

    calls: list[tuple[int, int, int]] = []
    monitor = _Monitor(1, logging.getLogger("test.engine"), lambda *a: calls.append(a))
    for event in [*events[:1], ObjectProgress(0, 0, "a.csv", 1, 0.5), *events[1:],
                  InstanceFailed(1, "model 'm' could not start"), InstanceDone(1)]:
        monitor.handle(pickle.loads(pickle.dumps(event)))
    assert calls == [(0, 1, 1), (1, 1, 2)]
    assert monitor.knobs == events[0].knobs  # type: ignore[union-attr]
    assert monitor.results == [finished.result] and monitor.done_instances == {0, 1}
    assert monitor.instance_errors == ["model 'm' could not start"]


def test_progress_and_log_lines(tmp_path: Path, rowsum: dict[str, Any],
                                caplog: pytest.LogCaptureFixture) -> None:
    inp = write(tmp_path / "in", {"a.csv": b"1\n2\n", "b.csv": b"3\n"})
    calls: list[tuple[int, int, int]] = []
    log = logging.getLogger("test.engine")
    with caplog.at_level(logging.INFO, logger="test.engine"):
        result = run_transform_job(job(inp, uri(tmp_path / "out")), rowsum, log=log,
                                   progress=lambda *a: calls.append(a))
    assert calls == [(1, 2, 2), (2, 2, 3)]

    def broken(*_: int) -> None:
        raise RuntimeError("callback bug")

    again = run_transform_job(job(inp, uri(tmp_path / "out2")), rowsum, progress=broken)
    assert again["TransformJobStatus"] == "Completed"
    assert any(m.startswith("object 1 of 2 a.csv: 2 records,") for m in caplog.messages)
    assert any(m.startswith("object 2 of 2 b.csv: 1 records,") for m in caplog.messages)
    assert result["TransformJobArn"] == "arn:aws:sagemaker:local:000000000000:transform-job/job-1"
    assert result["TransformStartTime"].tzinfo is not None
    assert result["TransformEndTime"] >= result["TransformStartTime"]
    assert result["TransformInput"]["SplitType"] == "Line" and "FailureReason" not in result
    assert set(result["LocalEngineStats"]) >= {"objects", "objects_failed", "records", "requests", "bytes_in",
                                               "seconds", "records_per_second"}


def test_invalid_requests_raise_before_anything_runs(tmp_path: Path, rowsum: dict[str, Any]) -> None:
    inp = write(tmp_path / "in", {"a.csv": b"1\n"})
    with pytest.raises(TransformSpecError, match=r"TransformResources\.InstanceCount"):
        run_transform_job(job(inp, uri(tmp_path / "out"), InstanceCount="1"), rowsum)
    with pytest.raises(TransformSpecError, match="ModelName: names model 'other'"):
        run_transform_job(job(inp, uri(tmp_path / "out"), ModelName="other"), rowsum)
    with pytest.raises(TransformSpecError, match=r"DataProcessing\.InputFilter: CSV rows are arrays"):
        run_transform_job(job(inp, uri(tmp_path / "out"), DataProcessing={"InputFilter": "$.id"}), rowsum)
    assert not (tmp_path / "out").exists()


def test_no_input_and_broken_model_fail_the_job(tmp_path: Path, rowsum: dict[str, Any]) -> None:
    (tmp_path / "empty").mkdir()
    result = run_transform_job(job(uri(tmp_path / "empty"), uri(tmp_path / "out")), rowsum)
    assert result["TransformJobStatus"] == "Failed" and "no input objects found" in result["FailureReason"]

    inp = write(tmp_path / "in", {"a.csv": b"1\n"})
    broken = model_request(uri(tmp_path / "missing.tar.gz"))
    result = run_transform_job(job(inp, uri(tmp_path / "out")), broken)
    assert result["TransformJobStatus"] == "Failed"
    assert result["FailureReason"].startswith(uri(tmp_path / "in" / "a.csv") + " was not transformed: model")
    assert outputs(tmp_path / "out") == {}


def test_existing_output_is_never_overwritten(tmp_path: Path, rowsum: dict[str, Any]) -> None:
    inp = write(tmp_path / "in", {"a.csv": b"1\n"})
    write(tmp_path / "out", {"a.csv.out": b"old"})
    result = run_transform_job(job(inp, uri(tmp_path / "out")), rowsum)
    assert result["TransformJobStatus"] == "Failed" and "already exists" in result["FailureReason"]
    assert (tmp_path / "out" / "a.csv.out").read_bytes() == b"old"


def test_s3_input_model_and_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    moto = pytest.importorskip("moto")
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    import boto3

    with moto.mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="bucket-a")
        s3.put_object(Bucket="bucket-a", Key="in/dt=2026-06-24/a.csv", Body=b"1,2\n3,4\n")
        s3.put_object(Bucket="bucket-a", Key="in/dt=2026-06-24/sub/b.csv", Body=b"5\n")
        tarball = Path(model_tarball(tmp_path, "rowsum").removeprefix("file://"))
        s3.put_object(Bucket="bucket-a", Key="models/rowsum/model.tar.gz", Body=tarball.read_bytes())
        req = job("s3://bucket-a/in/dt=2026-06-24", "s3://bucket-a/out/")
        result = run_transform_job(req, model_request("s3://bucket-a/models/rowsum/model.tar.gz"))
        assert result["TransformJobStatus"] == "Completed", result.get("FailureReason")
        got = {k: s3.get_object(Bucket="bucket-a", Key=k)["Body"].read()
               for k in ("out/a.csv.out", "out/sub/b.csv.out")}
        assert got == {"out/a.csv.out": b"3\n7\n", "out/sub/b.csv.out": b"5\n"}


# --- the Python handler runtime --------------------------------------------------------------------------

def test_runtime_sets_the_container_environment_and_restores_it(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SAGEMAKER_BATCH", raising=False)
    monkeypatch.setenv("JOB_FLAG", "before")
    runtime = PythonHandlerRuntime(model_request(uri(MODELS / "probe"), PROBE_MODEL="m", JOB_FLAG="model"))
    runtime.start({"SAGEMAKER_BATCH": "true", "SAGEMAKER_MAX_PAYLOAD_IN_MB": "6", "JOB_FLAG": "job"})
    assert runtime.ping()
    assert runtime.model == {"SAGEMAKER_BATCH": "true", "SAGEMAKER_MAX_PAYLOAD_IN_MB": "6",
                             "PROBE_MODEL": "m", "JOB_FLAG": "job"}
    assert runtime.execution_parameters() is None
    answer = json.loads(runtime.invoke(b"a\nb\n", "text/csv", ""))
    assert answer["n"] == 2 and answer["accept"] == "application/json"
    temp_dir = runtime.temp_dir
    assert temp_dir is not None and os.path.isdir(temp_dir)
    runtime.close()
    assert not runtime.ping() and not os.path.exists(temp_dir)
    assert "SAGEMAKER_BATCH" not in os.environ and os.environ["JOB_FLAG"] == "before"
    assert "PROBE_MODEL" not in os.environ
    assert "probe_util" not in sys.modules  # the handler's helper module from code/ is forgotten too


def test_runtime_sagemaker_program_and_framework_defaults(tmp_path: Path) -> None:
    pytest.importorskip("numpy")
    request = model_request(uri(MODELS / "defaults"), SAGEMAKER_PROGRAM="serve.py")
    with PythonHandlerRuntime(request) as runtime:
        runtime.start({})
        assert runtime.invoke(b"1,2\n3,4\n", "text/csv", "text/csv") == b"3.0\n7.0\n"
        assert runtime.invoke(b"[[1, 2], [3, 5]]", "application/json", "application/json") == b"[3, 8]"
        jsonl = "application/jsonlines"
        assert runtime.invoke(b"[1, 1]\n[2, 2.5]\n", jsonl, jsonl) == b"2.0\n4.5\n"
        with pytest.raises(ValueError, match="cannot decode content type 'image/png'"):
            runtime.invoke(b"x", "image/png", "text/csv")


def test_runtime_without_a_handler_says_where_it_looked(tmp_path: Path) -> None:
    runtime = PythonHandlerRuntime(model_request(uri(MODELS / "defaults")))
    with pytest.raises(ModelRuntimeError, match=r"no handler 'inference.py' in code/"):
        runtime.start({})
    assert runtime.temp_dir is None


def _tar_with(tmp_path: Path, member: tarfile.TarInfo, data: bytes = b"") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        ok = tarfile.TarInfo("code/inference.py")
        ok.size = 1
        tar.addfile(ok, io.BytesIO(b"#"))
        tar.addfile(member, io.BytesIO(data) if member.isfile() else None)
    return buf.getvalue()


@pytest.mark.parametrize(("name", "kind", "message"), [
    ("../evil", tarfile.REGTYPE, "escapes the model directory"),
    ("code/../../evil", tarfile.REGTYPE, "escapes the model directory"),
    ("/abs/evil", tarfile.REGTYPE, "absolute path"),
    ("link", tarfile.SYMTYPE, "links are not allowed"),
    ("hard", tarfile.LNKTYPE, "links are not allowed"),
    ("fifo", tarfile.FIFOTYPE, "not a file or folder"),
])
def test_tar_extraction_refuses_unsafe_members(tmp_path: Path, name: str, kind: bytes, message: str) -> None:
    member = tarfile.TarInfo(name)
    member.type = kind
    member.size = 4 if kind == tarfile.REGTYPE else 0
    member.linkname = "/etc/passwd" if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE) else ""
    data = _tar_with(tmp_path, member, b"evil")
    dest = tmp_path / "sandbox" / "model"
    with pytest.raises(UnsafeArchiveError, match=message):
        safe_extract_tar(io.BytesIO(data), str(dest), source="file:///m/model.tar.gz")
    assert not (tmp_path / "sandbox" / "evil").exists() and not (tmp_path / "evil").exists()


def test_engine_reports_an_unsafe_artifact(tmp_path: Path) -> None:
    evil = tarfile.TarInfo("../evil")
    evil.size = 4
    (tmp_path / "model.tar.gz").write_bytes(_tar_with(tmp_path, evil, b"evil"))
    inp = write(tmp_path / "in", {"a.csv": b"1\n"})
    result = run_transform_job(job(inp, uri(tmp_path / "out")), model_request(uri(tmp_path / "model.tar.gz")))
    assert result["TransformJobStatus"] == "Failed" and "'../evil'" in result["FailureReason"]
