"""The engine's instance workers start even inside a daemonic process.

Airflow 2's LocalExecutor and Celery's prefork pool run each task inside a daemonic
process; ``multiprocessing`` refuses children there unless the engine allows them.
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

from engine_helpers import handler_model, model_tarball, read_outputs, transform_request, write_files

from airflow_bt.transform.local_engine import run_transform_job


def _run_in_daemon(request: dict[str, Any], model: dict[str, Any], results: Any) -> None:
    try:
        results.put(run_transform_job(request, model)["TransformJobStatus"])
    except BaseException as exc:  # report, do not hide, what went wrong
        results.put(f"{type(exc).__name__}: {exc}")


def test_two_instances_run_from_a_daemonic_process(tmp_path: Path) -> None:
    inp = write_files(tmp_path / "in", {f"part-{i}.csv": f"{i},1\n{i},2\n".encode() for i in range(4)})
    request = transform_request(inp, (tmp_path / "out").as_uri(), InstanceCount=2)
    model = handler_model(model_tarball(tmp_path, "rowsum"))
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    daemon = ctx.Process(target=_run_in_daemon, args=(request, model, results), daemon=True)
    daemon.start()
    status = results.get(timeout=120)
    daemon.join(timeout=30)
    assert status == "Completed"
    assert read_outputs(tmp_path / "out") == {f"part-{i}.csv.out": f"{i + 1}\n{i + 2}\n".encode() for i in range(4)}
