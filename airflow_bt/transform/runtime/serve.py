"""A model container the engine starts itself from a serve command.

The model's ``PrimaryContainer.Environment`` holds ``AIRFLOW_BT_SERVE_COMMAND``, e.g.
``serve`` or ``python -m my_model.server --port {port}``. For each instance the runtime:

1. unpacks ``ModelDataUrl`` (if any) into a fresh model directory, safely;
2. picks a free port on 127.0.0.1 and starts the command (split like a shell would, no
   shell) with the container environment (:func:`serve_environment`): a few harmless variables
   of this process (``PATH``, ``HOME``, locale, temp dir, ``PYTHONPATH``; never credentials),
   the model's ``Environment``, the job's ``Environment`` and ``SAGEMAKER_*`` batch variables,
   plus ``SAGEMAKER_BIND_TO_PORT=<port>`` and ``SM_MODEL_DIR``/``AIRFLOW_BT_MODEL_DIR=<model dir>``
   (the command may also use the placeholders ``{port}``, ``{model_dir}`` and ``{python}``); the
   command dies with the process that started it (:mod:`~airflow_bt.transform.runtime.children`);
3. polls ``GET /ping`` until it answers 200, for at most ``AIRFLOW_BT_START_TIMEOUT``
   seconds (in the model's ``Environment``; default 600); if the command exits or never gets
   healthy the error quotes the tail of its output;
4. talks to it like :class:`~airflow_bt.transform.runtime.http.HttpContainerRuntime`;
5. stops it at the end: SIGTERM to its process group, SIGKILL after 10 s.

The command's stdout and stderr are pumped, a line at a time, into ``serve.log`` in its temp dir (the
tail an error quotes) and to :func:`airflow_bt.transform.runtime.output.emit`: the job's log.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from typing import Any

from airflow_bt.storage import for_uri
from airflow_bt.transform.runtime.artifacts import fetch_model_dir
from airflow_bt.transform.runtime.base import START_TIMEOUT_ENV, ModelRuntimeError, StorageResolver, start_timeout_s
from airflow_bt.transform.runtime.children import start_child
from airflow_bt.transform.runtime.http import HttpContainerRuntime
from airflow_bt.transform.runtime.output import emit

SERVE_COMMAND_ENV = "AIRFLOW_BT_SERVE_COMMAND"
STOP_GRACE_S = 10.0
OUTPUT_TAIL = 2000
#: The only variables a serve command inherits from the engine's environment (plus ``LC_*``): what a
#: program needs to run, nothing that carries a credential. Anything else goes in the model's Environment.
INHERITED_ENV = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TEMP", "TMP",
                 "PYTHONPATH", "VIRTUAL_ENV", "LD_LIBRARY_PATH", "SYSTEMROOT")
INHERITED_PREFIXES = ("LC_",)


def serve_environment(model_environment: Mapping[str, str], environment: Mapping[str, str],
                      extra: Mapping[str, str], parent: Mapping[str, str] | None = None) -> dict[str, str]:
    """A serve command's environment: the allow-listed part of ``parent`` (``os.environ``), then the
    model's ``Environment``, the job's container ``environment`` (``SAGEMAKER_*``), then ``extra``.

    Nothing else of the engine's environment reaches the model: not ``AWS_*`` credentials, not
    ``AIRFLOW_CONN_*``/``AIRFLOW__*`` connections and secrets, not any other variable.
    """
    parent = os.environ if parent is None else parent
    env = {name: value for name, value in parent.items()
           if name in INHERITED_ENV or name.startswith(INHERITED_PREFIXES)}
    env.update(model_environment)
    env.update(environment)
    env.update(extra)
    return env


def serve_command_of(model_request: Mapping[str, Any]) -> str | None:
    """The model's ``AIRFLOW_BT_SERVE_COMMAND``, if it has one."""
    env = (model_request.get("PrimaryContainer") or {}).get("Environment") or {}
    command = env.get(SERVE_COMMAND_ENV)
    return command if isinstance(command, str) and command.strip() else None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServeCommandRuntime(HttpContainerRuntime):
    """Starts ``AIRFLOW_BT_SERVE_COMMAND`` as the model container, then talks to it over HTTP."""

    enforces_start_timeout = True
    """:meth:`start` gives up by itself after ``AIRFLOW_BT_START_TIMEOUT``, quoting the command's output."""

    temp_prefix = "airflow-bt-serve-"

    def __init__(self, model_request: Mapping[str, Any], *, storage_for: StorageResolver | None = None,
                 timeout_s: float = 600.0, temp_root: str | None = None) -> None:
        command = self._command_of(model_request)
        container = model_request.get("PrimaryContainer") or {}
        self.command = command
        self.model_request = model_request
        self.model_data_url = container.get("ModelDataUrl")
        self.model_environment: dict[str, str] = dict(container.get("Environment") or {})
        self._storage_for = storage_for or (lambda uri: for_uri(uri, aws_conn_id=None))
        self._temp_root = temp_root
        self.temp_dir: str | None = None
        self.model_dir: str | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self._output_path: str | None = None
        self._pump: threading.Thread | None = None
        super().__init__(model_request, base_url="http://127.0.0.1:1", timeout_s=timeout_s)

    def _command_of(self, model_request: Mapping[str, Any]) -> str:
        command = serve_command_of(model_request)
        if command is None:
            raise ModelRuntimeError(f"model {model_request.get('ModelName')!r} has no {SERVE_COMMAND_ENV}")
        return command

    @property
    def what(self) -> str:
        """The started process, as error messages name it."""
        return f"the serve command {self.command!r}"

    def output_tail(self, limit: int = OUTPUT_TAIL) -> str:
        """The last ``limit`` characters the command wrote to stdout/stderr."""
        if not self._output_path or not os.path.exists(self._output_path):
            return ""
        with open(self._output_path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - limit))
            return fh.read().decode("utf-8", "replace").strip()

    def start(self, environment: Mapping[str, str]) -> None:
        """Unpack the model, start the command, wait for ``/ping``; on failure stop it and clean up."""
        try:
            self._start(environment)
        except BaseException:
            self.close()
            raise

    def _start(self, environment: Mapping[str, str]) -> None:
        self.temp_dir = tempfile.mkdtemp(prefix=self.temp_prefix, dir=self._temp_root)
        self.model_dir = os.path.join(self.temp_dir, "model")
        if self.model_data_url:
            fetch_model_dir(self.model_data_url, self.model_dir, self._storage_for)
        else:
            os.makedirs(self.model_dir)
        port = free_port()
        self._set_url(f"http://127.0.0.1:{port}")
        env = serve_environment(self.model_environment, environment, {
            "SAGEMAKER_BIND_TO_PORT": str(port), "SM_MODEL_DIR": self.model_dir,
            "AIRFLOW_BT_MODEL_DIR": self.model_dir})
        argv = self._argv(port, env)
        self._output_path = os.path.join(self.temp_dir, "serve.log")
        try:
            self.process = start_child(argv, env=env, stdin=self._stdin(), stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as exc:
            raise ModelRuntimeError(f"cannot start {self.what}: {exc}") from exc
        self._pump = threading.Thread(target=_pump_output, args=(self.process.stdout, self._output_path),
                                      name="model-output", daemon=True)
        self._pump.start()
        self._wait_healthy(start_timeout_s(self.model_request))

    def _drain(self, timeout: float = 2.0) -> None:
        """Wait (briefly) until the pump has written what the ended command printed."""
        if self._pump is not None:
            self._pump.join(timeout)

    def _stdin(self) -> int:
        """The child's stdin (``subprocess.DEVNULL``; a subclass may hand it a parent-liveness pipe)."""
        return subprocess.DEVNULL

    def _argv(self, port: int, env: dict[str, str]) -> list[str]:
        """The command line to start, placeholders filled; ``env`` (the child's environment) may be extended."""
        assert self.model_dir is not None
        try:
            argv = shlex.split(self.command)
        except ValueError as exc:
            raise ModelRuntimeError(f"{SERVE_COMMAND_ENV} {self.command!r} cannot be parsed: {exc}") from None
        places = {"{port}": str(port), "{model_dir}": self.model_dir, "{python}": sys.executable}
        for key, value in places.items():
            argv = [part.replace(key, value) for part in argv]
        if not argv:
            raise ModelRuntimeError(f"{SERVE_COMMAND_ENV} is empty")
        return argv

    def _wait_healthy(self, timeout_s: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        delay = 0.02
        while True:
            code = self.process.poll()
            if code is not None:
                self._drain()
                raise ModelRuntimeError(f"{self.what} exited with code {code} before "
                                        f"answering GET /ping; its last output:\n{self.output_tail()}")
            if self.ping():
                return
            if time.monotonic() >= deadline:
                self._drain(0.2)
                raise ModelRuntimeError(f"{self.what} did not answer GET {self.base_url}"
                                        f"/ping with 200 within {timeout_s:g} s ({START_TIMEOUT_ENV}); its last "
                                        f"output:\n{self.output_tail()}")
            time.sleep(delay)  # a health check has nothing to wait on but the clock
            delay = min(delay * 2, 0.25)

    def ping(self) -> bool:
        """Whether the command is still running and ``GET /ping`` answers 200."""
        if self.process is None or self.process.poll() is not None:
            return False
        try:
            return self.request("GET", "/ping", timeout=2.0)[0] == 200
        except OSError:
            return False

    def stop(self) -> None:
        """SIGTERM the command's process group, SIGKILL it after the grace period."""
        proc, self.process = self.process, None
        if proc is None:
            return
        if proc.stdin is not None:  # a parent-liveness pipe: its end tells the child to exit
            with contextlib.suppress(OSError):
                proc.stdin.close()
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):  # stray children of the group
            os.killpg(proc.pid, signal.SIGKILL)
        self._drain()

    def close(self) -> None:
        """Stop the command, close connections, remove the model directory. Safe to call twice."""
        super().close()
        self.stop()
        if self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
            self.temp_dir = None


def _pump_output(stream: Any, path: str) -> None:
    """Copy the command's output into ``path`` and hand each line to :func:`emit`, until the pipe closes."""
    with open(path, "ab") as out:
        for raw in iter(stream.readline, b""):
            out.write(raw)
            out.flush()
            emit(raw.decode("utf-8", "replace").rstrip("\r\n"))
    stream.close()
