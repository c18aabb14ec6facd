"""The HTTP side of ``airflow-bt local-sagemaker``: AWS JSON 1.1 over a threading HTTP server.

A request is ``POST /`` with ``X-Amz-Target: SageMaker.<Action>`` and a JSON body; the answer is
``application/x-amz-json-1.1`` JSON with timestamps as epoch seconds, or an error
``{"__type": <code>, "message": ...}`` with HTTP 400, which botocore raises as a ``ClientError``
with that code. ``GET /ping`` answers 200 (a health check). Authentication is not checked: anyone who
reaches the port can create models and jobs, which is why it binds 127.0.0.1 by default and refuses
``file://`` URIs, serve commands, Python handler models and model containers off loopback unless started
with ``--allow-file-uris`` / ``--allow-serve-commands`` / ``--allow-model-code`` /
``--allow-remote-model-urls``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

from airflow_bt.service.api import SageMakerApi
from airflow_bt.service.errors import ServiceError
from airflow_bt.transform.secrets import masked_environment

_log = logging.getLogger("airflow_bt.service")
CONTENT_TYPE = "application/x-amz-json-1.1"


def _wire(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.timestamp()
    raise TypeError(f"cannot encode {type(value).__name__}")


class _Handler(BaseHTTPRequestHandler):
    server: LocalSageMakerServer
    server_version = "airflow-bt-local-sagemaker"
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body, default=_wire).encode()
        self.send_response(status)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path in ("/", "/ping"):
            self._send(200, {"status": "ok", "service": "airflow-bt local-sagemaker"})
        elif path.startswith("/logs/"):
            self._send_logs(unquote(path.removeprefix("/logs/")))
        else:
            self._send(404, {"__type": "UnknownOperationException", "message": f"no such path {self.path}"})

    def _send_logs(self, job_name: str) -> None:
        """A job's log lines, ``<stream>\t<ISO time>\t<message>`` each, in the order they were written."""
        streams = self.server.api.logs.lines(job_name)
        if streams is None:
            self._send(404, {"__type": "ResourceNotFoundException", "message": f"no logs of job {job_name!r}"})
            return
        rows = sorted((stamp, name, message) for name, events in streams.items() for stamp, message in events)
        data = "".join(f"{name}\t{datetime.fromtimestamp(stamp / 1000, timezone.utc).isoformat()}\t{message}\n"
                       for stamp, name, message in rows).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        prefix, _, action = (self.headers.get("X-Amz-Target") or "").partition(".")
        try:
            if prefix != "SageMaker" or not action:
                raise ServiceError("UnknownOperationException",
                                   "expected the header X-Amz-Target: SageMaker.<Action>")
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                raise ServiceError("SerializationException", "the request body is not JSON") from None
            result = self.server.api.handle(action, body)
        except ServiceError as exc:
            _log.info("%s -> %d %s: %s", action or "?", exc.status, exc.code, exc.message)
            self._send(exc.status, exc.body())
            return
        except Exception as exc:
            _log.exception("%s failed", action)
            self._send(500, {"__type": "InternalFailure", "message": f"{type(exc).__name__}: {exc}"})
            return
        _log.debug("%s -> 200", action)
        self._send(200, result)

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("%s %s", self.address_string(), format % args)


class LocalSageMakerServer(ThreadingHTTPServer):
    """The service's HTTP server (``port=0``: an ephemeral port; see :attr:`url`)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, host: str = "127.0.0.1", port: int = 0, api: SageMakerApi | None = None) -> None:
        self.api = api or SageMakerApi()
        super().__init__((host, port), _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def start_in_thread(self) -> threading.Thread:
        """Serve from a daemon thread (for embedding in tests); stop with :meth:`stop`."""
        thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.2},
                                  name="local-sagemaker", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        """Stop serving, stop every running job, and close the socket."""
        self.shutdown()
        self.api.shutdown()
        self.server_close()


def default_region() -> str:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


def serve(host: str, port: int, *, region: str | None = None, allow_file_uris: bool = False,
          allow_serve_commands: bool = False, allow_model_code: bool = False,
          allow_remote_model_urls: bool = False, announce: Callable[[str], None] | None = None,
          job_logs: str = "auto") -> int:
    """Serve until SIGTERM or Ctrl-C, then stop running jobs. ``announce(url)`` once listening.

    ``job_logs``: ``auto``, ``cloudwatch`` or ``memory`` (:func:`~airflow_bt.service.joblogs.open_job_logs`).
    """
    from airflow_bt.service.joblogs import open_job_logs

    region = region or default_region()
    logs = open_job_logs(region, job_logs)
    _log.info("%s", logs.describe())
    api = SageMakerApi(region=region, allow_file_uris=allow_file_uris,
                       allow_serve_commands=allow_serve_commands, allow_model_code=allow_model_code,
                       allow_remote_model_urls=allow_remote_model_urls, logs=logs)
    masked_environment({"API_TOKEN": "warm-up"})  # load the masking rule (Airflow's) before the first Describe
    if allow_serve_commands:
        _log.warning("--allow-serve-commands: any client that reaches %s:%d can run commands as this user", host,
                     port)
    if allow_model_code:
        _log.warning("--allow-model-code: any client that reaches %s:%d can run Python code as this user (in a "
                     "child process without this service's credentials)", host, port)
    server = LocalSageMakerServer(host, port, api)

    def _terminate(signum: int, frame: Any) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _terminate)
    (announce or (lambda url: print(f"airflow-bt local-sagemaker listening on {url}", flush=True)))(server.url)
    try:
        server.serve_forever(poll_interval=0.2)
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        _log.info("shutting down: stopping running jobs")
        api.shutdown()
        logs.close()
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(serve("127.0.0.1", 0))
