"""A cooperative stop of a running job: ``run_transform_job(..., stop=threading.Event())``.

The model sleeps per request, so a job takes seconds; the tests synchronise on the engine's own
``progress`` and log calls (never on the clock), set the event from the test's thread while the
engine runs in another one (or the engine's thread blocks on it), and check that the job ends at
once, ``Stopped``, with the ``.out`` of every object finished before the stop and nothing else.
"""

from __future__ import annotations

import logging
import multiprocessing
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
from engine_helpers import handler_model, inline_handler, model_tarball, read_outputs, transform_request, write_files

from airflow_bt.transform.local_engine import run_transform_job

#: Sums each CSV line, sleeping ``SLOW_MODEL_SLEEP_S`` seconds (PrimaryContainer.Environment) per request.
SLOW_HANDLER = """
import os
import time


def model_fn(model_dir):
    return float(os.environ.get("SLOW_MODEL_SLEEP_S", "0.2"))


def transform_fn(model, data, content_type, accept):
    time.sleep(model)
    return "".join(f"{sum(float(x) for x in line.split(',')):g}\\n" for line in data.decode().splitlines())
"""
STOPPED = re.compile(r"^stopped by request \(StopTransformJob, a timeout or a kill\) after (\d+) of (\d+) objects$")
WAIT_S = 60  # a bound for waits on events that the engine should set within a second or two


def slow_job(tmp_path: Path, objects: int, lines: int, **overrides: Any) -> tuple[dict[str, Any], dict[str, bytes]]:
    """A job of ``objects`` CSV objects of ``lines`` records, one request per record; its expected outputs."""
    files = {f"part-{i}.csv": "".join(f"{i},{n}\n" for n in range(lines)).encode() for i in range(objects)}
    expected = {f"part-{i}.csv.out": "".join(f"{i + n}\n" for n in range(lines)).encode() for i in range(objects)}
    inp = write_files(tmp_path / "in", files)
    request = transform_request(inp, (tmp_path / "out").as_uri(), BatchStrategy="SingleRecord", **overrides)
    return request, expected


def slow_model(tmp_path: Path, sleep_s: float = 0.2) -> dict[str, Any]:
    return handler_model(inline_handler(tmp_path, "slow", SLOW_HANDLER), SLOW_MODEL_SLEEP_S=str(sleep_s))


def run_in_thread(target: Callable[[], dict[str, Any]]) -> tuple[threading.Thread, dict[str, Any]]:
    """Start ``target`` in a thread; the dict gets its ``result`` (or ``error``) and ``returned_at``."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = target()
        except BaseException as exc:  # reported by the test
            box["error"] = exc
        finally:
            box["returned_at"] = time.monotonic()

    thread = threading.Thread(target=run, name="engine", daemon=True)
    thread.start()
    return thread, box


def wait_for(event: threading.Event, thread: threading.Thread, box: dict[str, Any]) -> None:
    """Wait for ``event``, which the engine's thread sets; re-raise at once what that thread raised."""
    deadline = time.monotonic() + WAIT_S
    while not event.wait(0.05):  # the event is what synchronises; the timeout only notices a dead thread
        if "error" in box:
            raise box["error"]
        assert thread.is_alive(), "the engine returned before the event was set"
        assert time.monotonic() < deadline, "the engine did not get there"


def stop_and_join(stop: threading.Event, thread: threading.Thread, box: dict[str, Any]
                  ) -> tuple[dict[str, Any], float]:
    """Set ``stop`` and wait for the job: its description and the seconds from the stop to its return."""
    stopped_at = time.monotonic()
    stop.set()
    result = joined(thread, box)
    return result, box["returned_at"] - stopped_at


def joined(thread: threading.Thread, box: dict[str, Any]) -> dict[str, Any]:
    thread.join(WAIT_S)
    assert not thread.is_alive(), "the engine did not return"
    if "error" in box:
        raise box["error"]
    result: dict[str, Any] = box["result"]
    return result


def no_temp_files(root: Path) -> bool:
    return not [p for p in root.rglob("*") if p.name.startswith(".airflow-bt-tmp-")] if root.exists() else True


def test_a_stop_mid_object_keeps_the_finished_objects_and_writes_no_partial_one(tmp_path: Path) -> None:
    """InstanceCount=1 (in the engine's thread): stopped in the middle of the second object."""
    request, expected = slow_job(tmp_path, objects=4, lines=10)  # 10 requests of 0.2 s per object
    stop, in_second_object = threading.Event(), threading.Event()

    def progress(done: int, total: int, records: int) -> None:
        if done == 1 and records > 10:  # a progress tick of object 2: some of its answers are written
            in_second_object.set()
            assert stop.wait(WAIT_S)  # hold the engine until the test has stopped it

    thread, box = run_in_thread(lambda: run_transform_job(request, slow_model(tmp_path), progress=progress,
                                                          stop=stop))
    wait_for(in_second_object, thread, box)
    result, took = stop_and_join(stop, thread, box)

    assert result["TransformJobStatus"] == "Stopped"
    assert STOPPED.match(result["FailureReason"]).groups() == ("1", "4")  # type: ignore[union-attr]
    assert read_outputs(tmp_path / "out") == {"part-0.csv.out": expected["part-0.csv.out"]}
    assert no_temp_files(tmp_path / "out")
    stats = result["LocalEngineStats"]
    assert stats["objects"] == 4 and stats["objects_failed"] == 3 and stats["records"] == 10
    assert took < 3, f"the stop took {took:.2f} s"
    logging.getLogger("test").info("in-process stop took %.3f s", took)


def test_an_in_process_stop_waits_at_most_for_the_request_in_flight(tmp_path: Path) -> None:
    """Nothing holds the engine: the stop lands while a 0.5 s request runs, and ends the job after it."""
    request, expected = slow_job(tmp_path, objects=3, lines=4)
    stop, one_done = threading.Event(), threading.Event()

    def progress(done: int, total: int, records: int) -> None:
        if done >= 1:
            one_done.set()

    thread, box = run_in_thread(lambda: run_transform_job(request, slow_model(tmp_path, 0.5), progress=progress,
                                                          stop=stop))
    wait_for(one_done, thread, box)
    result, took = stop_and_join(stop, thread, box)

    assert result["TransformJobStatus"] == "Stopped"
    finished, total = map(int, STOPPED.match(result["FailureReason"]).groups())  # type: ignore[union-attr]
    outputs = read_outputs(tmp_path / "out")
    assert total == 3 and 1 <= finished < 3 and len(outputs) == finished
    assert all(data == expected[key] for key, data in outputs.items())
    assert no_temp_files(tmp_path / "out")
    assert took < 0.5 + 1.0, f"the stop took {took:.2f} s"
    logging.getLogger("test").info("in-process stop (a request in flight) took %.3f s", took)


def test_a_stop_terminates_the_instance_processes(tmp_path: Path) -> None:
    """InstanceCount=2: the workers are terminated; every .out they committed is whole."""
    request, expected = slow_job(tmp_path, objects=6, lines=6, InstanceCount=2)
    stop, one_done = threading.Event(), threading.Event()
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    workers: list[psutil.Process] = []

    def progress(done: int, total: int, records: int) -> None:
        if done >= 1 and not one_done.is_set():
            workers.extend(p for p in me.children(recursive=True)
                           if p.pid not in before and "resource_tracker" not in " ".join(p.cmdline()))
            one_done.set()

    thread, box = run_in_thread(lambda: run_transform_job(request, slow_model(tmp_path), progress=progress,
                                                          stop=stop))
    wait_for(one_done, thread, box)
    result, took = stop_and_join(stop, thread, box)

    assert result["TransformJobStatus"] == "Stopped"
    finished, total = map(int, STOPPED.match(result["FailureReason"]).groups())  # type: ignore[union-attr]
    assert total == 6 and 1 <= finished < 6
    outputs = read_outputs(tmp_path / "out")
    assert len(outputs) >= finished and len(outputs) < 6  # a worker may commit one just before it is stopped
    assert all(data == expected[key] for key, data in outputs.items())  # whole, never partial
    assert no_temp_files(tmp_path / "out")
    assert len(workers) >= 2  # both instances were running
    _, alive = psutil.wait_procs(workers, timeout=0)
    assert not alive, f"left running: {alive}"
    assert multiprocessing.active_children() == []
    assert took < 3, f"the stop took {took:.2f} s"
    logging.getLogger("test").info("multi-process stop took %.3f s", took)


@pytest.mark.parametrize("instances", [1, 2])
def test_a_stop_set_before_the_job_starts(tmp_path: Path, instances: int) -> None:
    request, _ = slow_job(tmp_path, objects=3, lines=2, InstanceCount=instances)
    stop = threading.Event()
    stop.set()
    result = run_transform_job(request, slow_model(tmp_path), stop=stop)
    assert result["TransformJobStatus"] == "Stopped"
    assert STOPPED.match(result["FailureReason"]).groups() == ("0", "3")  # type: ignore[union-attr]
    assert read_outputs(tmp_path / "out") == {}
    assert "MaxConcurrentTransforms" not in result  # no model ever started


def test_a_stop_while_the_model_starts(tmp_path: Path) -> None:
    """A model_fn that never returns: the stop ends the wait for the model at once."""
    inp = write_files(tmp_path / "in", {"a.csv": b"1\n"})
    model = handler_model(model_tarball(tmp_path, "behave"), BEHAVE_HANG_AT_START="1")
    stop, running = threading.Event(), threading.Event()

    class Log(logging.LoggerAdapter):  # type: ignore[type-arg]
        def info(self, msg: object, *args: object, **kwargs: Any) -> None:
            super().info(msg, *args, **kwargs)
            if str(msg).endswith("objects on %d instance(s)"):  # logged just before the instance starts
                running.set()

    log = Log(logging.getLogger("test"), {})
    thread, box = run_in_thread(lambda: run_transform_job(transform_request(inp, (tmp_path / "out").as_uri()),
                                                          model, log=log, stop=stop))
    wait_for(running, thread, box)
    stopped_at = time.monotonic()
    stop.set()
    result = joined(thread, box)
    assert result["TransformJobStatus"] == "Stopped"
    assert STOPPED.match(result["FailureReason"]).groups() == ("0", "1")  # type: ignore[union-attr]
    assert box["returned_at"] - stopped_at < 3
    assert read_outputs(tmp_path / "out") == {}


def test_a_stop_after_the_last_object_changes_nothing(tmp_path: Path) -> None:
    request, expected = slow_job(tmp_path, objects=2, lines=2)
    stop = threading.Event()

    def progress(done: int, total: int, records: int) -> None:
        if done == total:
            stop.set()

    result = run_transform_job(request, slow_model(tmp_path, 0.01), progress=progress, stop=stop)
    assert result["TransformJobStatus"] == "Completed", result.get("FailureReason")
    assert read_outputs(tmp_path / "out") == expected


@pytest.mark.parametrize("instances", [1, 2])
def test_the_engine_runs_in_a_thread_and_completes_when_never_stopped(tmp_path: Path, instances: int) -> None:
    request, expected = slow_job(tmp_path, objects=4, lines=3, InstanceCount=instances)
    stop = threading.Event()
    thread, box = run_in_thread(lambda: run_transform_job(request, slow_model(tmp_path, 0.01), stop=stop))
    result = joined(thread, box)
    assert result["TransformJobStatus"] == "Completed", result.get("FailureReason")
    assert read_outputs(tmp_path / "out") == expected
    assert result["LocalEngineStats"]["records"] == 12
    assert multiprocessing.active_children() == []
