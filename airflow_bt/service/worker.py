"""The worker process of one transform job: ``python -m airflow_bt.service.worker <job name>``.

Reads ``{"request": <CreateTransformJob>, "model": <CreateModel>, "policy": <EnginePolicy>}`` as the
first line of stdin and runs it on the local engine under that policy (the engine starts one process
per instance when ``InstanceCount > 1``).
Reports on its original stdout, one JSON object a line: ``{"event": "started"}``, then
``{"event": "result", "status": "Completed" | "Failed", "failure_reason": ..., ...}``. Everything
else the job prints (the engine's log, the model's output) goes to stderr.

SIGTERM stops the job (the engine's ``finally`` blocks stop its instance processes); so does the end
of stdin, so a worker never outlives the service that started it.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from typing import IO, Any


def _on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def _watch_parent(stdin: IO[str]) -> None:
    for _ in stdin:  # the service never writes more; EOF means it closed the pipe or died
        pass
    os.kill(os.getpid(), signal.SIGTERM)


def _emit(out: IO[str], event: dict[str, Any]) -> None:
    out.write(json.dumps(event, default=str) + "\n")
    out.flush()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    name = argv[0] if argv else "job"
    # Our reports keep the original stdout; anything printed by the job goes to stderr instead.
    events = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    signal.signal(signal.SIGTERM, _on_sigterm)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s [{name}] %(levelname)s %(message)s")
    log = logging.getLogger("airflow_bt.service.worker")

    payload = json.loads(sys.stdin.readline())
    threading.Thread(target=_watch_parent, args=(sys.stdin,), daemon=True, name="watch-parent").start()
    _emit(events, {"event": "started"})

    from airflow_bt.transform.local_engine import run_transform_job
    from airflow_bt.transform.runtime.policy import EnginePolicy

    try:
        policy = EnginePolicy.from_dict(payload["policy"])
        description = run_transform_job(payload["request"], payload["model"], aws_conn_id=None, log=log,
                                        policy=policy)
    except Exception as exc:
        log.exception("transform job %s failed", name)
        _emit(events, {"event": "result", "status": "Failed",
                       "failure_reason": f"ClientError: {type(exc).__name__}: {exc}"[:1024]})
        return 1
    knobs = {k: description[k] for k in ("MaxConcurrentTransforms", "MaxPayloadInMB", "BatchStrategy")
             if k in description}
    _emit(events, {"event": "result", "status": description["TransformJobStatus"],
                   "failure_reason": description.get("FailureReason"), "knobs": knobs,
                   "stats": description.get("LocalEngineStats", {})})
    return 0


if __name__ == "__main__":
    sys.exit(main())
