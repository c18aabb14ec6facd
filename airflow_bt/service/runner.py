"""One transform job's worker process, seen from the service: start it, stop it, learn how it ended."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

from airflow_bt.transform.runtime.policy import EnginePolicy

_log = logging.getLogger(__name__)

#: ``on_finished(outcome)``: the worker's ``result`` event, or ``None`` if it exited without one.
Finished = Callable[[dict[str, Any] | None], None]
#: ``on_output(line, instance)``: one line the job wrote (the engine's log, its model's output).
Output = Callable[[str, int], None]
#: How long the end of a job waits for the last lines of its output (after its processes are gone).
OUTPUT_DRAIN_S = 5.0


class JobRunner:
    """Runs ``python -m airflow_bt.service.worker`` for one job, in its own process group.

    :param name: the job's name (for logs).
    :param request: the ``CreateTransformJob`` request.
    :param model: the ``CreateModel`` request of its model.
    :param on_started: called when the worker has started.
    :param on_finished: called once, when the worker and every process it started are gone.
    :param stop_grace: seconds a stopping worker gets to clean up before its process group is killed.
    :param policy: what the job's engine may open and run (the service's:
        :func:`~airflow_bt.service.api.service_policy`).
    :param on_output: called with each line the worker writes to stderr (the engine's log lines and its
        models' output, ``[instance <n>] ``-tagged from an instance worker process) and the instance it
        belongs to; every line is also copied to the service's stderr. All of them are handed over before
        ``on_finished`` is called.
    """

    def __init__(self, name: str, request: dict[str, Any], model: dict[str, Any], *,
                 on_started: Callable[[], None], on_finished: Finished, policy: EnginePolicy,
                 stop_grace: float = 5.0, on_output: Output | None = None) -> None:
        self.name = name
        self.request = request
        self.model = model
        self.on_started = on_started
        self.on_finished = on_finished
        self.stop_grace = stop_grace
        self.policy = policy
        self.on_output = on_output
        self._output: threading.Thread | None = None
        self.proc: subprocess.Popen[str] | None = None
        self._done = threading.Event()
        self._reader: threading.Thread | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "airflow_bt.service.worker", self.name],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            errors="replace", start_new_session=True,
        )
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"request": self.request, "model": self.model,
                                          "policy": self.policy.to_dict()}) + "\n")
        self.proc.stdin.flush()  # stdin stays open: its end tells the worker the service is gone
        self._output = threading.Thread(target=self._read_output, name=f"job-output-{self.name}", daemon=True)
        self._output.start()
        self._reader = threading.Thread(target=self._read, name=f"job-{self.name}", daemon=True)
        self._reader.start()

    def _read_output(self) -> None:
        from airflow_bt.transform.runtime.output import instance_of

        proc = self.proc
        assert proc is not None and proc.stderr is not None
        for line in proc.stderr:
            sys.stderr.write(line)
            if self.on_output is not None:
                instance, text = instance_of(line.rstrip("\n"))
                try:
                    self.on_output(text, instance)
                except Exception:  # the job's log is a convenience: never lose the job over it
                    _log.exception("[%s] could not record an output line", self.name)
        sys.stderr.flush()

    def _read(self) -> None:
        proc = self.proc
        assert proc is not None and proc.stdout is not None
        outcome: dict[str, Any] | None = None
        try:
            for line in proc.stdout:
                try:
                    event = json.loads(line)
                except ValueError:
                    _log.warning("[%s] unexpected worker output: %s", self.name, line.rstrip())
                    continue
                if event.get("event") == "started":
                    self.on_started()
                elif event.get("event") == "result":
                    outcome = event
            proc.wait()
        finally:
            self._kill_group()
            with contextlib.suppress(OSError):
                if proc.stdin is not None:
                    proc.stdin.close()
            if self._output is not None:  # its writers are gone: the rest of its output is in the pipe
                self._output.join(OUTPUT_DRAIN_S)
            try:
                self.on_finished(outcome)
            finally:
                self._done.set()

    def _kill_group(self) -> None:
        """Kill whatever the worker left behind (instance processes, a model server)."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)

    def stop(self) -> None:
        """Ask the worker to stop (SIGTERM); kill its process group if it has not ended after ``stop_grace``."""
        if self.proc is None or self._done.is_set():
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)

        def escalate() -> None:
            if not self._done.wait(self.stop_grace):
                _log.warning("[%s] worker did not stop within %.0f s: killing it", self.name, self.stop_grace)
                self._kill_group()

        threading.Thread(target=escalate, name=f"stop-{self.name}", daemon=True).start()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the job's processes are gone; ``False`` on timeout."""
        return self._done.wait(timeout)
