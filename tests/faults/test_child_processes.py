"""A SIGKILLed engine takes every process it started with it: instance workers, serve commands, and the
handler servers that run a Python handler out of process (the service's policy).

An engine process (``run_transform_job`` in a subprocess, as in an Airflow task or the service's job
worker) runs a job whose model holds each ``/invocations`` request until a release file exists. Once every
instance's model server has a request in hand (each touches ``invoked-<pid>``), the test SIGKILLs
the engine and checks that every descendant it had is gone within a bounded wait; then it releases
the models, and no ``.out`` object appears.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
from engine_helpers import FIXTURES, handler_model, inline_handler, transform_request, write_files

from airflow_bt.service.api import service_policy
from airflow_bt.transform.runtime.children import start_child, watch_parent_pipe

REPO = Path(__file__).resolve().parents[2]

_HOLDING_SERVER = """\
import os, sys, time

sys.path.insert(0, {fixtures!r})
import model_server

HOLD = os.environ["HOLD_DIR"]
_score = model_server.score


def score(line, content_type, base):
    open(os.path.join(HOLD, f"invoked-{{os.getpid()}}"), "w").close()
    while not os.path.exists(os.path.join(HOLD, "release")):
        time.sleep(0.05)
    return _score(line, content_type, base)


model_server.score = score
model_server.main()
"""

#: A Python handler that holds each request the same way (it runs in a handler server when isolated).
_HOLDING_HANDLER = """\
import os, time


def model_fn(model_dir):
    return os.environ["HOLD_DIR"]


def transform_fn(hold, data, content_type, accept):
    open(os.path.join(hold, f"invoked-{os.getpid()}"), "w").close()
    while not os.path.exists(os.path.join(hold, "release")):
        time.sleep(0.05)
    return data
"""

_ENGINE = """\
import json, sys
from airflow_bt.transform.local_engine import run_transform_job
from airflow_bt.transform.runtime.policy import EnginePolicy

request, model, policy = (json.load(open(path)) for path in sys.argv[1:4])
print(run_transform_job(request, model, policy=EnginePolicy.from_dict(policy))["TransformJobStatus"])
"""


def holding_model(kind: str, tmp_path: Path, hold: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(CreateModel request, policy)`` for a model that holds requests: a serve command on the embedded
    engine's policy, or a Python handler on the service's (isolated in a handler server)."""
    if kind == "serve-command":
        server = tmp_path / "holding_server.py"
        server.write_text(_HOLDING_SERVER.format(fixtures=str(FIXTURES)))
        model = handler_model("", AIRFLOW_BT_SERVE_COMMAND=f"{{python}} {shlex.quote(str(server))} --port {{port}}",
                              HOLD_DIR=str(hold))
        return model, {}
    model = handler_model(inline_handler(tmp_path, "holding", _HOLDING_HANDLER), HOLD_DIR=str(hold))
    return model, service_policy(allow_model_code=True, allow_file_uris=True).to_dict()


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll for an event (a file appearing, a process ending); fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def describe(pids: set[int]) -> str:
    out = []
    for pid in sorted(pids):
        try:
            out.append(f"{pid}: {' '.join(psutil.Process(pid).cmdline())[:160]}")
        except psutil.NoSuchProcess:
            out.append(f"{pid}: gone")
    return "\n".join(out)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
@pytest.mark.parametrize("kind", ["serve-command", "isolated-handler"])
@pytest.mark.parametrize("instances", [1, 2])
def test_a_sigkilled_engine_leaves_no_child_running_and_no_output_written(instances: int, kind: str,
                                                                          tmp_path: Path) -> None:
    hold = tmp_path / "hold"
    hold.mkdir()
    model, policy = holding_model(kind, tmp_path, hold)
    inp = write_files(tmp_path / "in", {"a.csv": b"1,2\n", "b.csv": b"3,4\n"})
    out = tmp_path / "out"
    request = transform_request(inp, out.as_uri(), InstanceCount=instances)
    for name, doc in (("request", request), ("model", model), ("policy", policy)):
        (tmp_path / f"{name}.json").write_text(json.dumps(doc))

    with (tmp_path / "engine.log").open("wb") as log:
        engine = subprocess.Popen([sys.executable, "-c", _ENGINE, *(str(tmp_path / f"{name}.json") for name in (
            "request", "model", "policy"))], cwd=REPO, stdout=log, stderr=log)
    descendants: set[int] = set()
    try:
        # every instance's model server is up and holds a request: the workers are scoring
        wait_until(lambda: len(list(hold.glob("invoked-*"))) == instances or engine.poll() is not None,
                   timeout=60, what=f"{instances} model server(s) to get a request")
        assert engine.poll() is None, (tmp_path / "engine.log").read_text()[-3000:]
        descendants = {p.pid for p in psutil.Process(engine.pid).children(recursive=True)}
        servers = {int(p.name.split("-", 1)[1]) for p in hold.glob("invoked-*")}
        assert servers <= descendants and len(descendants) >= instances + (instances if instances > 1 else 0)

        os.kill(engine.pid, signal.SIGKILL)
        engine.wait()
        try:
            wait_until(lambda: not any(alive(pid) for pid in descendants), timeout=15,
                       what="the engine's children to die with it")
        except AssertionError:
            survivors = {pid for pid in descendants if alive(pid)}
            raise AssertionError(f"still running after the engine was SIGKILLed:\n{describe(survivors)}") from None
    finally:
        if engine.poll() is None:
            engine.kill()
            engine.wait()
        for pid in descendants:  # a failing run's survivors: this test started them, it ends them
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    (hold / "release").touch()  # the models would answer now: nothing is left to write an answer
    assert not (out.exists() and list(out.rglob("*.out")))


def _worker_watching_its_parent(parent_alive: Any, pid_file: str) -> None:
    """A stand-in instance worker: starts a child of its own, then waits on the engine's pipe forever."""
    watch_parent_pipe(parent_alive)
    child = start_child(["sleep", "600"])
    Path(pid_file).write_text(str(child.pid))
    child.wait()


def test_a_worker_exits_and_stops_its_children_when_the_engines_pipe_closes(tmp_path: Path) -> None:
    """The portable half (no PR_SET_PDEATHSIG): end-of-file on the pipe only the engine writes ends the worker."""
    ctx = multiprocessing.get_context("spawn")
    parent_alive, writer = ctx.Pipe(duplex=False)
    pid_file = tmp_path / "child.pid"
    worker = ctx.Process(target=_worker_watching_its_parent, args=(parent_alive, str(pid_file)))
    worker.start()
    try:
        child = int(wait_until(lambda: pid_file.exists() and pid_file.read_text(), timeout=30,
                               what="the worker's child to start"))
        assert worker.is_alive() and alive(child)
        writer.close()  # what the engine's death does to the pipe
        worker.join(timeout=15)
        assert worker.exitcode == 1
        wait_until(lambda: not alive(child), timeout=15, what="the worker's child to be stopped")
    finally:
        parent_alive.close()
        if worker.is_alive():
            worker.kill()
            worker.join()
