"""A Python handler model as a model container: the process the engine runs a handler in, when isolated.

``python -m airflow_bt.transform.runtime.handler_server <model_dir> --port N [--code-dir DIR]
[--exit-on-stdin-eof]`` loads the handler of an already unpacked model directory
(:class:`~airflow_bt.transform.runtime.python_handler.PythonHandlerRuntime` with ``model_dir=``:
nothing is fetched, so the process needs no credentials) and serves the SageMaker container contract
on ``127.0.0.1:N``:

- ``GET /ping``: 200 once ``model_fn`` has returned;
- ``GET /execution-parameters``: the handler's ``execution_parameters()`` as JSON, 404 if it has none;
- ``POST /invocations``: the handler's answer (200), or HTTP 500 whose body is
  ``<ExceptionType>: <message>``, as the in-process runtime reports a failed request.

Its environment is the container's (:func:`~airflow_bt.transform.runtime.serve.serve_environment`: the
model's and the job's ``Environment``, ``SAGEMAKER_*``; none of the engine's credentials). If the handler
cannot load, the reason goes to stderr (the engine quotes it) and the process exits with code 1. With
``--exit-on-stdin-eof`` it exits when its stdin (a pipe only the engine writes) ends: the engine is gone.
The engine side is :class:`~airflow_bt.transform.runtime.isolated_handler.IsolatedHandlerRuntime`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from airflow_bt.transform.runtime.base import ModelRuntimeError
from airflow_bt.transform.runtime.python_handler import PythonHandlerRuntime


class _Handler(BaseHTTPRequestHandler):
    server: HandlerServer
    protocol_version = "HTTP/1.1"  # keep-alive: the engine reuses one connection per request thread
    disable_nagle_algorithm = True  # headers and body go out in two writes: no delayed-ACK stall

    def _answer(self, status: int, body: bytes, content_type: str = "application/octet-stream") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        runtime = self.server.runtime
        if path == "/ping":
            healthy = runtime.ping()
            self._answer(200 if healthy else 503, b"" if healthy else b"not loaded")
        elif path == "/execution-parameters":
            try:
                params = runtime.execution_parameters()
            except Exception as exc:
                self._answer(500, f"{type(exc).__name__}: {exc}".encode())
                return
            if params is None:
                self._answer(404, b"the handler defines no execution_parameters()")
            else:
                self._answer(200, json.dumps(params).encode(), "application/json")
        else:
            self._answer(404, f"no such path {path}".encode())

    def do_POST(self) -> None:
        payload = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.split("?", 1)[0] != "/invocations":
            self._answer(404, f"no such path {self.path}".encode())
            return
        try:
            result = self.server.runtime.invoke(payload, self.headers.get("Content-Type") or "",
                                                self.headers.get("Accept") or "")
        except Exception as exc:  # the model's message, as the in-process runtime reports it
            self._answer(500, f"{type(exc).__name__}: {exc}".encode("utf-8", "replace"))
            return
        self._answer(200, result)

    def log_message(self, format: str, *args: Any) -> None:  # one line per request otherwise
        pass


class HandlerServer(ThreadingHTTPServer):
    """Serves one loaded :class:`PythonHandlerRuntime` (``MaxConcurrentTransforms`` requests at once)."""

    daemon_threads = True

    def __init__(self, runtime: PythonHandlerRuntime, port: int) -> None:
        self.runtime = runtime
        super().__init__(("127.0.0.1", port), _Handler)


def _exit_on_eof() -> None:
    def watch() -> None:
        try:
            while sys.stdin.buffer.read(65536):
                pass
        except OSError:
            pass
        os._exit(0)

    threading.Thread(target=watch, name="watch-engine", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m airflow_bt.transform.runtime.handler_server",
                                     description="serve a Python handler model over the container contract")
    parser.add_argument("model_dir", help="the unpacked model artifact")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--code-dir", default=None, help="the handler's folder (default: <model_dir>/code)")
    parser.add_argument("--model-name", default="", help="for messages")
    parser.add_argument("--model-data-url", default=None, help="where the artifact came from, for messages")
    parser.add_argument("--exit-on-stdin-eof", action="store_true")
    args = parser.parse_args(argv)
    if args.exit_on_stdin_eof:
        _exit_on_eof()
    container = {"ModelDataUrl": args.model_data_url} if args.model_data_url else {}
    runtime = PythonHandlerRuntime({"ModelName": args.model_name, "PrimaryContainer": container},
                                   model_dir=args.model_dir, code_dir=args.code_dir)
    try:
        runtime.start(dict(os.environ))  # the container environment it was started with
    except Exception as exc:  # the engine quotes this line as the reason the model did not start
        reason = str(exc) if isinstance(exc, ModelRuntimeError) else f"{type(exc).__name__}: {exc}"
        print(f"airflow-bt handler server: {reason}", file=sys.stderr, flush=True)
        return 1
    server = HandlerServer(runtime, args.port)
    print(f"airflow-bt handler server listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
        runtime.close()
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # not sys.exit: the stdin watcher thread may be blocked in a read
