"""Conformance table: each Batch Transform rule the local engine reproduces (DESIGN.md, "Batch
Transform semantics the local engine reproduces"), pinned by a small input and its exact output.

Every row runs one job through ``run_transform_job`` and checks, byte for byte, the ``.out``
objects and, where the rule is about failing, the exact ``FailureReason`` or the exact
request-validation error (raised before anything runs). ``{in}`` stands for the input
prefix's URI. The fixture models are in ``tests/fixtures/models`` (``behave`` answers each
line by what it says: numbers are summed, ``BAD`` fails, ``HANG`` never answers, ...).
"""

from __future__ import annotations

import gzip
import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from engine_helpers import handler_model, model_tarball, read_outputs, transform_request, write_files

from airflow_bt.transform import TransformSpecError
from airflow_bt.transform.local_engine import run_transform_job


def recordio(body: bytes) -> bytes:
    return struct.pack("<II", 0xCED7230A, len(body)) + body + b"\0" * (-len(body) % 4)


def tfrecord(body: bytes) -> bytes:
    return struct.pack("<Q", len(body)) + b"crc!" + body + b"crc!"


def probe(n: int, size: int, first: str, ct: str = "text/csv", accept: str = "text/csv") -> bytes:
    """The ``probe`` model's answer to a request of ``n`` lines and ``size`` bytes."""
    return json.dumps({"n": n, "bytes": size, "first": first, "ct": ct, "accept": accept}).encode() + b"\n"


JSONL = {"ContentType": "application/jsonlines", "Accept": "application/jsonlines"}
ROW = b"x" * 99 + b"\n"  # 100 bytes: 10,485 rows fit in 1 MB (1,048,576 bytes)
PER_MB = (1024 * 1024) // len(ROW)
EXEC_PARAMS = json.dumps({"BatchStrategy": "SingleRecord", "MaxPayloadInMB": 2, "MaxConcurrentTransforms": 5})
FOUR_OBJECTS = {f"p/part-{i}.csv": b"".join(f"{i},{j}\n".encode() for j in range(3)) for i in range(4)}


@dataclass(frozen=True)
class Case:
    """One rule: input objects, request fields, and exactly what the job must produce."""

    id: str
    rule: str
    files: dict[str, bytes] = field(default_factory=lambda: {"a.csv": b"1\n"})
    request: dict[str, Any] = field(default_factory=dict)
    model: str = "behave"
    model_env: dict[str, str] = field(default_factory=dict)
    manifest: list[str] | None = None
    out: dict[str, bytes] = field(default_factory=dict)
    reason: str | None = None
    spec_error: str | None = None
    stats: dict[str, int] = field(default_factory=dict)
    described: dict[str, Any] = field(default_factory=dict)


CASES = [
    # --- Input -------------------------------------------------------------------------------------------
    Case("s3prefix-recursive", "Input: S3Prefix is every object under the prefix, recursively; output mirrors keys",
         files={"a.csv": b"1,2\n", "sub/dir/b.csv": b"3,4\n5\n"},
         out={"a.csv.out": b"3\n", "sub/dir/b.csv.out": b"7\n5\n"}),
    Case("manifest", "Input: ManifestFile [{prefix}, keys...] lists the objects; others are not read",
         files={"x/a.csv": b"1,1\n", "b.csv": b"5\n", "ignored.csv": b"9\n"}, manifest=["x/a.csv", "b.csv"],
         out={"x/a.csv.out": b"2\n", "b.csv.out": b"5\n"}),
    Case("gzip", "CompressionType Gzip: objects are gunzipped before splitting",
         files={"a.csv.gz": gzip.compress(b"1,2\n3,4\n", mtime=0)}, request={"CompressionType": "Gzip"},
         out={"a.csv.gz.out": b"3\n7\n"}),
    # --- SplitType ---------------------------------------------------------------------------------------
    Case("split-none", "SplitType None sends each object whole, one request per object",
         files={"a.bin": b"1,2\n3,4\n", "b.bin": b"xyz"},
         request={"SplitType": "None", "ContentType": "application/octet-stream"},
         out={"a.bin.out": b"request of 8 bytes\n", "b.bin.out": b"request of 3 bytes\n"},
         stats={"requests": 2, "records": 2}),
    Case("split-line", "SplitType Line splits on newlines; a last line without one is a record",
         files={"a.csv": b"1,2\n3,4\n5"}, request={"BatchStrategy": "SingleRecord"},
         out={"a.csv.out": b"3\n7\n5\n"}, stats={"requests": 3, "records": 3}),
    Case("split-recordio", "SplitType RecordIO splits MXNet RecordIO records (framing kept)",
         files={"a.rec": recordio(b"abc") + recordio(b"hello")},
         request={"SplitType": "RecordIO", "ContentType": "application/x-recordio", "BatchStrategy": "SingleRecord"},
         out={"a.rec.out": b"request of 12 bytes\nrequest of 16 bytes\n"}),
    Case("split-tfrecord", "SplitType TFRecord splits TFRecord frames (framing kept)",
         files={"a.tfr": tfrecord(b"abc") + tfrecord(b"hello")},
         request={"SplitType": "TFRecord", "ContentType": "application/x-tfrecord", "BatchStrategy": "SingleRecord"},
         out={"a.tfr.out": b"request of 19 bytes\nrequest of 21 bytes\n"}),
    # --- BatchStrategy and payload limits ----------------------------------------------------------------
    Case("single-record", "BatchStrategy SingleRecord sends one record per request",
         files={"a.csv": b"1\n2\n3\n"}, request={"BatchStrategy": "SingleRecord"},
         out={"a.csv.out": b"1\n2\n3\n"}, stats={"requests": 3}),
    Case("multi-record-bytes", "MultiRecord packs as many whole records as fit in MaxPayloadInMB, in bytes",
         model="probe", files={"a.csv": ROW * 20_000}, request={"MaxPayloadInMB": 1, "BatchStrategy": "MultiRecord"},
         out={"a.csv.out": probe(PER_MB, PER_MB * 100, "x" * 99) + probe(20_000 - PER_MB, (20_000 - PER_MB) * 100,
                                                                        "x" * 99)},
         stats={"requests": 2, "records": 20_000}),
    Case("record-too-large", "a record over the payload limit fails its object, naming it and the record number",
         files={"a.csv": b"1\n" + b"1," * 600_000 + b"1\n", "b.csv": b"2\n"}, request={"MaxPayloadInMB": 1},
         out={"b.csv.out": b"2\n"},
         reason="{in}/a.csv: record 2 is 1200002 bytes, over the payload limit of 1048576 bytes "
                "(MaxPayloadInMB=1); raise MaxPayloadInMB (at most 100) or make the record smaller"),
    Case("no-empty-request", "never an empty request: an empty object gets an empty .out and no request",
         files={"a.csv": b"", "b.csv": b"4\n"}, out={"a.csv.out": b"", "b.csv.out": b"4\n"}, stats={"requests": 1}),
    Case("payload-limit", "MaxPayloadInMB is at most 100", request={"MaxPayloadInMB": 101},
         spec_error="MaxPayloadInMB: must be an integer from 0 to 100, got 101"),
    Case("concurrency-x-payload", "MaxConcurrentTransforms x MaxPayloadInMB is at most 100",
         request={"MaxPayloadInMB": 10, "MaxConcurrentTransforms": 11},
         spec_error="MaxConcurrentTransforms: MaxConcurrentTransforms * MaxPayloadInMB must be <= 100, "
                    "got 11 * 10 = 110"),
    Case("batch-strategy-needs-split", "BatchStrategy needs a SplitType",
         request={"SplitType": "None", "BatchStrategy": "MultiRecord"},
         spec_error="BatchStrategy: needs TransformInput.SplitType Line, RecordIO or TFRecord (SplitType None "
                    "sends each object whole), got BatchStrategy='MultiRecord' with SplitType None"),
    # --- MaxConcurrentTransforms, InstanceCount, execution parameters -------------------------------------
    Case("in-flight", "MaxConcurrentTransforms requests are in flight per instance, never more",
         files={"a.csv": b"WAIT3\n" * 6}, request={"BatchStrategy": "SingleRecord", "MaxConcurrentTransforms": 3},
         out={"a.csv.out": b"3\n" * 6}),
    Case("input-order", "answers keep input order whatever order concurrent requests finish in",
         files={"a.csv": b"".join(f"{i}\n".encode() for i in range(60))},
         request={"BatchStrategy": "SingleRecord", "MaxConcurrentTransforms": 8},
         out={"a.csv.out": b"".join(f"{i}\n".encode() for i in range(60))}),
    Case("instances", "InstanceCount: whole objects are distributed over instance processes",
         files=FOUR_OBJECTS, request={"InstanceCount": 2},
         out={f"p/part-{i}.csv.out": f"{i}\n{i + 1}\n{i + 2}\n".encode() for i in range(4)},
         described={"TransformResources": {"InstanceType": "ml.m5.large", "InstanceCount": 2}}),
    Case("execution-parameters", "unset knobs come from the container's /execution-parameters",
         model="probe", model_env={"PROBE_EXEC_PARAMS": EXEC_PARAMS}, files={"a.csv": b"1\n2\n"},
         out={"a.csv.out": probe(1, 2, "1") + probe(1, 2, "2")},
         described={"BatchStrategy": "SingleRecord", "MaxPayloadInMB": 2, "MaxConcurrentTransforms": 5}),
    Case("defaults", "...then the defaults: 1 concurrent request, 6 MB, MultiRecord",
         model="probe", files={"a.csv": b"1\n2\n"}, out={"a.csv.out": probe(2, 4, "1")},
         described={"BatchStrategy": "MultiRecord", "MaxPayloadInMB": 6, "MaxConcurrentTransforms": 1}),
    # --- Output assembly ---------------------------------------------------------------------------------
    Case("assemble-line", "AssembleWith Line puts a newline after each answer", model="rowsum",
         files={"a.csv": b"1,2\n3,4\n"}, request={"BatchStrategy": "SingleRecord", "AssembleWith": "Line"},
         out={"a.csv.out": b"3\n7\n"}),
    Case("assemble-none", "AssembleWith None concatenates answers as the model wrote them", model="rowsum",
         files={"a.csv": b"1,2\n3,4\n"}, request={"BatchStrategy": "SingleRecord", "AssembleWith": "None"},
         out={"a.csv.out": b"37"}),
    # --- DataProcessing ----------------------------------------------------------------------------------
    Case("csv-input-filter", "InputFilter: a CSV row is an array; $[1:] drops the id column",
         files={"a.csv": b"id1,1,2\nid2,3,4\n"}, request={"DataProcessing": {"InputFilter": "$[1:]"}},
         out={"a.csv.out": b"3\n7\n"}),
    Case("csv-join", "JoinSource=Input: the CSV prediction is appended to the whole input row",
         files={"a.csv": b"id1,1,2\nid2,3,4\n"},
         request={"DataProcessing": {"InputFilter": "$[1:]", "JoinSource": "Input"}},
         out={"a.csv.out": b"id1,1,2,3\nid2,3,4,7\n"}),
    Case("csv-join-output-filter", "OutputFilter selects from the joined row: $[0,-1] is id and prediction",
         files={"a.csv": b"id1,1,2\nid2,3,4\n"},
         request={"DataProcessing": {"InputFilter": "$[1:]", "JoinSource": "Input", "OutputFilter": "$[0,-1]"}},
         out={"a.csv.out": b"id1,3\nid2,7\n"}),
    Case("csv-slices-unions", "slices (end excluded), unions and negative indexes",
         files={"a.csv": b"a,1,2,3,b\n"},
         request={"DataProcessing": {"InputFilter": "$[1:4]", "JoinSource": "Input", "OutputFilter": "$[-1,0,2:4]"}},
         out={"a.csv.out": b"6,a,2,3\n"}),
    Case("csv-quoting", "CSV fields follow RFC 4180 quoting through filters and the join",
         files={"a.csv": b'"x,1",1,2\n'},
         request={"DataProcessing": {"InputFilter": "$[1:]", "JoinSource": "Input", "OutputFilter": "$[0,-1]"}},
         out={"a.csv.out": b'"x,1",3\n'}),
    Case("json-join", "JSON Lines: the answer joins each input object as SageMakerOutput",
         files={"a.jsonl": b'{"id":1,"features":[1,2]}\n{"id":2,"features":[3,4]}\n'},
         request={**JSONL, "DataProcessing": {"InputFilter": "$.features", "JoinSource": "Input"}},
         out={"a.jsonl.out": b'{"id":1,"features":[1,2],"SageMakerOutput":{"score":3}}\n'
                             b'{"id":2,"features":[3,4],"SageMakerOutput":{"score":7}}\n'}),
    Case("json-join-output-filter", "OutputFilter $['id','SageMakerOutput'] keeps those members, in order",
         files={"a.jsonl": b'{"id":1,"features":[1,2]}\n{"id":2,"features":[3,4]}\n'},
         request={**JSONL, "DataProcessing": {"InputFilter": "$.features", "JoinSource": "Input",
                                              "OutputFilter": "$['id','SageMakerOutput']"}},
         out={"a.jsonl.out": b'{"id":1,"SageMakerOutput":{"score":3}}\n{"id":2,"SageMakerOutput":{"score":7}}\n'}),
    Case("json-join-non-object", "a record that is not an object is wrapped as SageMakerInput",
         files={"a.jsonl": b"[1,2]\n[3,4]\n"}, request={**JSONL, "DataProcessing": {"JoinSource": "Input"}},
         out={"a.jsonl.out": b'{"SageMakerInput":[1,2],"SageMakerOutput":{"score":3}}\n'
                             b'{"SageMakerInput":[3,4],"SageMakerOutput":{"score":7}}\n'}),
    Case("json-output-filter", "OutputFilter without a join selects from each answer",
         files={"a.jsonl": b"[1,2]\n[3,4]\n"}, request={**JSONL, "DataProcessing": {"OutputFilter": "$.score"}},
         out={"a.jsonl.out": b"3\n7\n"}),
    Case("json-document", "a whole application/json document (SplitType None) is one record",
         files={"a.json": b'{"id":7,"features":[1,2,3]}'},
         request={"SplitType": "None", "AssembleWith": "None", "ContentType": "application/json",
                  "Accept": "application/json",
                  "DataProcessing": {"InputFilter": "$.features", "JoinSource": "Input",
                                     "OutputFilter": "$['id','SageMakerOutput']"}},
         out={"a.json.out": b'{"id":7,"SageMakerOutput":{"score":6}}\n'}),
    Case("filter-out-of-range", "an index outside a record fails its object, naming the object and record",
         files={"a.csv": b"1,2\n3\n", "b.csv": b"1,1\n"}, request={"DataProcessing": {"InputFilter": "$[1]"}},
         out={"b.csv.out": b"1\n"},
         reason="{in}/a.csv: record 2: InputFilter: $[1]: index 1 is outside the record's 1 elements"),
    Case("join-accept-rule", "a join needs Accept = ContentType",
         request={"Accept": "application/json", "DataProcessing": {"JoinSource": "Input"}},
         spec_error="TransformOutput.Accept: must equal TransformInput.ContentType ('text/csv') with "
                    "JoinSource=Input, got 'application/json'"),
    Case("join-assemble-rule", "a join needs AssembleWith = SplitType",
         request={"AssembleWith": "None", "DataProcessing": {"JoinSource": "Input"}},
         spec_error="TransformOutput.AssembleWith: must equal TransformInput.SplitType (Line) with "
                    "JoinSource=Input, got None"),
    Case("csv-index-paths-rule", "CSV filters take index paths only",
         request={"DataProcessing": {"InputFilter": "$.id"}},
         spec_error="DataProcessing.InputFilter: CSV rows are arrays: only index paths such as $[1:] or $[0,-1] "
                    "apply, got '$.id'"),
    Case("filter-syntax-rule", "a filter outside the JSONPath subset is refused",
         request={"DataProcessing": {"OutputFilter": "$[1:2:3]"}},
         spec_error="DataProcessing.OutputFilter: is not a supported JSONPath: '$[1:2:3]': expected a slice like "
                    "[start:end] at position 1, got '1:2:3'"),
    Case("filter-length-rule", "filters are at most 63 characters",
         request={"DataProcessing": {"InputFilter": "$" + "[0]" * 21}},
         spec_error="DataProcessing.InputFilter: must be at most 63 characters, got 64"),
    # --- Names, Environment, ModelClientConfig -------------------------------------------------------------
    Case("job-name-pattern", "job names: letters, digits and hyphens", request={"TransformJobName": "bad_name"},
         spec_error="TransformJobName: must match ^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$, got 'bad_name'"),
    Case("job-name-length", "job names: at most 63 characters", request={"TransformJobName": "j" * 64},
         spec_error="TransformJobName: must be at most 63 characters, got 64"),
    Case("model-name-pattern", "model names: letters, digits and hyphens", request={"ModelName": "model.v1"},
         spec_error="ModelName: must match ^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$, got 'model.v1'"),
    Case("environment-entries", "Environment: at most 16 entries",
         request={"Environment": {f"K{i}": "v" for i in range(17)}},
         spec_error="Environment: must have at most 16 entries, got 17"),
    Case("environment-keys", "Environment: valid variable names", request={"Environment": {"1X": "v"}},
         spec_error="Environment.1X: variable names must match ^[a-zA-Z_][a-zA-Z0-9_]{0,1023}$"),
    Case("timeout-range", "InvocationsTimeoutInSeconds: 1 to 3600",
         request={"ModelClientConfig": {"InvocationsTimeoutInSeconds": 3601}},
         spec_error="ModelClientConfig.InvocationsTimeoutInSeconds: must be an integer from 1 to 3600, got 3601"),
    Case("retries-range", "InvocationsMaxRetries: 0 to 3", request={"ModelClientConfig": {"InvocationsMaxRetries": 4}},
         spec_error="ModelClientConfig.InvocationsMaxRetries: must be an integer from 0 to 3, got 4"),
    # --- ModelClientConfig at run time -------------------------------------------------------------------
    Case("retries", "a failed request is retried InvocationsMaxRetries times", files={"a.csv": b"FLAKY2\n"},
         request={"ModelClientConfig": {"InvocationsMaxRetries": 2}}, out={"a.csv.out": b"ok after 3\n"}),
    Case("retries-exhausted", "...then it fails its object", files={"a.csv": b"FLAKY2\n"},
         request={"ModelClientConfig": {"InvocationsMaxRetries": 1}},
         reason="{in}/a.csv: the model failed request 1 (records 1-1) after 2 attempts: RuntimeError: "
                "flaky failure 2"),
    Case("timeout", "a model that never answers times out after InvocationsTimeoutInSeconds; the job goes on",
         files={"a.csv": b"1\n", "b.csv": b"HANG\n", "c.csv": b"2\n"},
         request={"ModelClientConfig": {"InvocationsTimeoutInSeconds": 1, "InvocationsMaxRetries": 0}},
         out={"a.csv.out": b"1\n", "c.csv.out": b"2\n"},
         reason="{in}/b.csv: the model failed request 1 (records 1-1) after 1 attempt: TimeoutError: no answer "
                "within InvocationsTimeoutInSeconds=1"),
    Case("timeout-instances", "...also in instance processes (InstanceCount=2)",
         files={"a.csv": b"1\n", "b.csv": b"HANG\n", "c.csv": b"2\n", "d.csv": b"3\n"},
         request={"InstanceCount": 2,
                  "ModelClientConfig": {"InvocationsTimeoutInSeconds": 1, "InvocationsMaxRetries": 0}},
         out={"a.csv.out": b"1\n", "c.csv.out": b"2\n", "d.csv.out": b"3\n"},
         reason="{in}/b.csv: the model failed request 1 (records 1-1) after 1 attempt: TimeoutError: no answer "
                "within InvocationsTimeoutInSeconds=1"),
    Case("start-timeout", "a model that never starts fails the job after AIRFLOW_BT_START_TIMEOUT",
         model_env={"BEHAVE_HANG_AT_START": "1", "AIRFLOW_BT_START_TIMEOUT": "0.5"},
         reason="{in}/a.csv was not transformed: model 'test-model' could not start: ModelRuntimeError: the model "
                "did not start within 0.5 s (AIRFLOW_BT_START_TIMEOUT in PrimaryContainer.Environment)"),
    # --- Errors ------------------------------------------------------------------------------------------
    Case("bad-record", "a record the model rejects: no .out for its object, the others complete, job Failed",
         files={"a.csv": b"1\n", "b.csv": b"1\nBAD\n3\n", "c.csv": b"2\n"},
         out={"a.csv.out": b"1\n", "c.csv.out": b"2\n"},
         reason="{in}/b.csv: the model failed request 1 (records 1-3) after 1 attempt: ValueError: "
                "cannot score row 'BAD'", stats={"objects": 3, "objects_failed": 1}),
    # --- Container contract ------------------------------------------------------------------------------
    Case("container-environment", "the model starts with SAGEMAKER_BATCH and the job's batch settings",
         files={"a.csv": b"ENV\n"},
         request={"BatchStrategy": "SingleRecord", "MaxPayloadInMB": 3, "MaxConcurrentTransforms": 2},
         out={"a.csv.out": b'{"SAGEMAKER_BATCH": "true", "SAGEMAKER_BATCH_STRATEGY": "SINGLE_RECORD", '
                           b'"SAGEMAKER_MAX_CONCURRENT_TRANSFORMS": "2", "SAGEMAKER_MAX_PAYLOAD_IN_MB": "3"}\n'}),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_conformance(case: Case, tmp_path: Path) -> None:
    inp = write_files(tmp_path / "in", case.files)
    in_uri = inp.rstrip("/")
    source, overrides = inp, dict(case.request)
    if case.manifest is not None:
        manifest = tmp_path / "manifest.json"
        manifest.write_text(json.dumps([{"prefix": inp}, *case.manifest]))
        source, overrides["S3DataType"] = manifest.as_uri(), "ManifestFile"
    request = transform_request(source, (tmp_path / "out").as_uri(), **overrides)
    model = handler_model(model_tarball(tmp_path, case.model), **case.model_env)

    if case.spec_error is not None:
        with pytest.raises(TransformSpecError) as err:
            run_transform_job(request, model)
        assert str(err.value) == case.spec_error
        assert not (tmp_path / "out").exists()
        return

    result = run_transform_job(request, model)
    assert read_outputs(tmp_path / "out") == case.out
    if case.reason is None:
        assert result["TransformJobStatus"] == "Completed", result.get("FailureReason")
    else:
        assert result["TransformJobStatus"] == "Failed"
        assert result["FailureReason"] == case.reason.format(**{"in": in_uri})
    for key, value in case.stats.items():
        assert result["LocalEngineStats"][key] == value, key
    for key, value in case.described.items():
        assert result[key] == value, key


def test_every_semantics_bullet_of_the_design_has_rows() -> None:
    """The table covers each bullet of DESIGN.md's semantics section (by the words that name it)."""
    covered = " ".join(c.rule + " " + c.id for c in CASES).lower()
    for topic in ("s3prefix", "manifestfile", "gzip", "splittype none", "line", "recordio", "tfrecord",
                  "singlerecord", "multirecord", "payload limit", "maxconcurrenttransforms", "instancecount",
                  "execution-parameters", "assemblewith", "inputfilter", "outputfilter", "joinsource",
                  "sagemakeroutput", "sagemakerinput", "retried", "timeout", "no .out", "sagemaker_batch"):
        assert topic in covered, topic


def test_instances_are_processes_and_an_object_never_spans_two(tmp_path: Path) -> None:
    """InstanceCount=2: each object is served by one worker process; two processes share the objects."""
    import os

    inp = write_files(tmp_path / "in", {f"part-{i}.csv": b"PID\n" * 5 for i in range(4)})
    request = transform_request(inp, (tmp_path / "out").as_uri(), InstanceCount=2, BatchStrategy="SingleRecord")
    result = run_transform_job(request, handler_model(model_tarball(tmp_path, "behave")))
    assert result["TransformJobStatus"] == "Completed"
    pids = {key: set(data.split()) for key, data in read_outputs(tmp_path / "out").items()}
    assert all(len(p) == 1 for p in pids.values())  # every record of an object: the same instance
    served_by = set().union(*pids.values())
    assert len(served_by) == 2 and str(os.getpid()).encode() not in served_by
