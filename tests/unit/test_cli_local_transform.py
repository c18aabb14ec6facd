"""``airflow-bt local-transform``: each runtime kind, exit codes, progress display, help."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from engine_helpers import (
    MODEL_SERVER,
    handler_model,
    model_tarball,
    read_outputs,
    running_model_server,
    transform_request,
    write_files,
    write_json,
)

from airflow_bt.cli import main
from airflow_bt.transform.progress import ProgressPrinter

REPO = Path(__file__).resolve().parents[2]


def files_for(tmp_path: Path, model: dict[str, Any], inputs: dict[str, bytes], **req: Any) -> list[str]:
    inp = write_files(tmp_path / "in", inputs)
    request = transform_request(inp, (tmp_path / "out").as_uri(), **req)
    return ["local-transform", "--model", write_json(tmp_path / "model.json", model),
            "--request", write_json(tmp_path / "job.json", request)]


@pytest.mark.parametrize("kind", ["python", "http", "serve"])
def test_each_runtime_kind_runs_and_prints_the_description(kind: str, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    with running_model_server() as url:
        model = {
            "python": handler_model(model_tarball(tmp_path, "behave")),
            "http": handler_model("", image=url),
            "serve": handler_model("", image="rowsum:dev",
                                   AIRFLOW_BT_SERVE_COMMAND=f"{sys.executable} {MODEL_SERVER} --port {{port}}"),
        }[kind]
        code = main(files_for(tmp_path, model, {"a.csv": b"1,2\n3,4\n", "b.csv": b"5\n"}, InstanceCount=2))
    out, err = capsys.readouterr()
    assert code == 0
    description = json.loads(out)
    assert description["TransformJobStatus"] == "Completed"
    assert description["LocalEngineStats"]["records"] == 3
    assert read_outputs(tmp_path / "out") == {"a.csv.out": b"3\n7\n", "b.csv.out": b"5\n"}
    assert "objects 2/2  records 3  " in err and " rec/s\n" in err  # the final progress line (not a terminal)
    assert "transform job job-1 Completed: 2 of 2 objects, 3 records" in err


def test_a_failed_job_exits_1_naming_the_object(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = handler_model(model_tarball(tmp_path, "behave"))
    code = main(files_for(tmp_path, model, {"a.csv": b"1\n", "b.csv": b"BAD\n", "c.csv": b"2\n"}))
    out, err = capsys.readouterr()
    assert code == 1
    reason = json.loads(out)["FailureReason"]
    assert reason.startswith((tmp_path / "in" / "b.csv").as_uri() + ": the model failed request 1")
    assert sorted(read_outputs(tmp_path / "out")) == ["a.csv.out", "c.csv.out"]
    assert "b.csv failed:" in err


def test_an_invalid_request_exits_2_before_running(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = handler_model(model_tarball(tmp_path, "behave"))
    code = main(files_for(tmp_path, model, {"a.csv": b"1\n"}, MaxPayloadInMB=200))
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.strip() == "invalid request: MaxPayloadInMB: must be an integer from 0 to 100, got 200"


def test_help_documents_the_runtime_kinds(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["local-transform", "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    for words in ("--model", "--request", "AIRFLOW_BT_SERVE_COMMAND", 'Image "http://host:port"',
                  "code/inference.py", "file:///", "Exit code: 0 Completed, 1 Failed, 2 invalid request"):
        assert words in text, words


def test_the_console_script(tmp_path: Path) -> None:
    model = handler_model(model_tarball(tmp_path, "behave"))
    args = files_for(tmp_path, model, {"a.csv": b"1,1\n"})
    script = Path(sys.executable).parent / "airflow-bt"
    proc = subprocess.run([str(script), *args], capture_output=True, text=True, timeout=120, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["TransformJobStatus"] == "Completed"
    assert read_outputs(tmp_path / "out") == {"a.csv.out": b"2\n"}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_on_a_terminal_is_one_updating_line() -> None:
    stream, clock = io.StringIO(), Clock()
    printer = ProgressPrinter(stream, tty=True, clock=clock)
    clock.now += 2
    printer(3, 10, 120_000)
    clock.now += 2
    printer(4, 10, 180_000)
    handler = printer.log_handler("%(message)s")
    handler.emit(_record("object 5 of 10 failed"))
    printer.close()
    line = "objects 4/10  records 180,000  45,000 rec/s"
    assert stream.getvalue() == (
        "\r objects 3/10  records 120,000  60,000 rec/s"
        f"\r {line}"
        "\r" + " " * (len(line) + 1) + "\r" + "object 5 of 10 failed\n"  # a log line clears the status line...
        f"\r {line}"  # ...which is drawn again below it
        "\n")


def test_progress_elsewhere_is_a_line_every_few_seconds_and_at_the_end() -> None:
    stream, clock = io.StringIO(), Clock()
    printer = ProgressPrinter(stream, tty=False, every_s=5, clock=clock)
    for done, records in ((1, 10), (2, 20), (3, 30)):  # at 3 s, 6 s (too soon after 3 s), 9 s
        clock.now += 3
        printer(done, 4, records)
    clock.now += 1
    printer(4, 4, 40)
    printer.close()
    assert stream.getvalue() == ("objects 1/4  records 10  3 rec/s\n"
                                 "objects 3/4  records 30  3 rec/s\n"
                                 "objects 4/4  records 40  4 rec/s\n")


def _record(message: str) -> Any:
    import logging

    return logging.LogRecord("x", logging.ERROR, __file__, 1, message, None, None)
