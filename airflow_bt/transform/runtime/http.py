"""A model container reached over HTTP: the user's real image, already running.

``PrimaryContainer.Image`` is the container's base URL, e.g. ``http://127.0.0.1:8080``
(a path prefix is kept: ``http://host/proxy/model`` calls ``/proxy/model/invocations``).
The runtime speaks the SageMaker serving contract:

- ``GET /ping``: 200 means healthy (checked once at start);
- ``GET /execution-parameters``: optional; a JSON object with ``MaxConcurrentTransforms``,
  ``MaxPayloadInMB``, ``BatchStrategy`` (any non-200 answer means "none");
- ``POST /invocations`` with ``Content-Type`` = the job's ``ContentType`` and ``Accept`` = its
  ``Accept``; a 2xx answer's body is the prediction, anything else fails the request and
  its body (the model's message) is quoted in the error.

A container that is already running cannot be given the job's environment
(``SAGEMAKER_BATCH``, ``SAGEMAKER_MAX_PAYLOAD_IN_MB``, ...): start it with them, or let
the engine start it (:class:`~airflow_bt.transform.runtime.serve.ServeCommandRuntime`).
Standard library only (``http.client``); one keep-alive connection per calling thread.
"""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from airflow_bt.transform.runtime.base import ModelInvocationError, ModelRuntimeError

HTTP_SCHEMES = ("http://", "https://")
MAX_ERROR_BODY = 1000
PING_TIMEOUT_S = 10.0


def is_http_url(image: Any) -> bool:
    """Whether a ``PrimaryContainer.Image`` is an ``http(s)://`` URL of a running container."""
    return isinstance(image, str) and image.lower().startswith(HTTP_SCHEMES)


class HttpContainerRuntime:
    """A :class:`~airflow_bt.transform.runtime.base.ModelRuntime` for a container at an HTTP URL."""

    default_content_type = "application/octet-stream"
    """``Content-Type`` of ``/invocations`` when the job sets no ``ContentType`` ("" sends none)."""

    def __init__(self, model_request: Mapping[str, Any] | None = None, *, base_url: str | None = None,
                 timeout_s: float = 600.0) -> None:
        container = (model_request or {}).get("PrimaryContainer") or {}
        self.model_name = str((model_request or {}).get("ModelName", ""))
        self.timeout_s = timeout_s
        self._local = threading.local()
        self._connections: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._set_url(base_url or str(container.get("Image") or ""))

    def _set_url(self, url: str) -> None:
        self.base_url = url.rstrip("/")
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ModelRuntimeError(f"model {self.model_name!r}: {url!r} is not an http(s):// URL of a container")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")

    def __enter__(self) -> HttpContainerRuntime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- HTTP --------------------------------------------------------------------------------------------

    def _connect(self, timeout: float) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        conn = cls(self._host, self._port, timeout=timeout)
        with self._lock:
            self._connections.append(conn)
        return conn

    def _drop(self, conn: http.client.HTTPConnection) -> None:
        conn.close()
        with self._lock:
            if conn in self._connections:
                self._connections.remove(conn)

    def request(self, method: str, path: str, body: bytes | None = None, headers: Mapping[str, str] | None = None,
                *, timeout: float | None = None) -> tuple[int, bytes]:
        """``(status, body)`` of one request; a fresh connection when ``timeout`` is given, else this
        thread's keep-alive one (reopened once if the server closed it while idle)."""
        if timeout is not None:
            conn = self._connect(timeout)
            try:
                conn.request(method, self._prefix + path, body=body, headers=dict(headers or {}))
                response = conn.getresponse()
                return response.status, response.read()
            finally:
                self._drop(conn)
        for attempt in (1, 2):
            cached: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
            reused = cached is not None
            conn = cached if cached is not None else self._connect(self.timeout_s)
            self._local.conn = conn
            try:
                conn.request(method, self._prefix + path, body=body, headers=dict(headers or {}))
                response = conn.getresponse()
                data = response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
                    http.client.CannotSendRequest):
                self._local.conn = None
                self._drop(conn)
                if reused and attempt == 1:  # a keep-alive connection the server had closed
                    continue
                raise
            except BaseException:
                self._local.conn = None
                self._drop(conn)
                raise
            if response.will_close:
                self._local.conn = None
                self._drop(conn)
            return response.status, data
        raise AssertionError("unreachable")  # pragma: no cover

    # --- the ModelRuntime protocol -------------------------------------------------------------------------

    def start(self, environment: Mapping[str, str]) -> None:
        """Check that the container answers ``GET /ping`` with 200 (the environment cannot be applied)."""
        self.check_ping()

    def check_ping(self, timeout: float = PING_TIMEOUT_S) -> None:
        """Raise :class:`ModelRuntimeError` saying why the container is not healthy."""
        try:
            status, body = self.request("GET", "/ping", timeout=timeout)
        except OSError as exc:
            raise ModelRuntimeError(f"no model container answers GET {self.base_url}/ping: "
                                    f"{type(exc).__name__}: {exc}") from exc
        if status != 200:
            raise ModelRuntimeError(f"GET {self.base_url}/ping answered HTTP {status}: "
                                    f"{body[:MAX_ERROR_BODY].decode('utf-8', 'replace')}")

    def ping(self) -> bool:
        """Whether ``GET /ping`` answers 200."""
        try:
            return self.request("GET", "/ping", timeout=PING_TIMEOUT_S)[0] == 200
        except OSError:
            return False

    def execution_parameters(self) -> dict[str, Any] | None:
        """``GET /execution-parameters`` as a dict; ``None`` unless it answers 200."""
        status, body = self.request("GET", "/execution-parameters", timeout=PING_TIMEOUT_S)
        if status != 200:
            return None
        try:
            params = json.loads(body)
        except ValueError as exc:
            raise ModelRuntimeError(f"GET {self.base_url}/execution-parameters did not answer JSON: {exc}") from None
        if not isinstance(params, dict):
            raise ModelRuntimeError(f"GET {self.base_url}/execution-parameters answered "
                                    f"{type(params).__name__}; expected a JSON object")
        return params

    def invoke(self, payload: bytes, content_type: str, accept: str) -> bytes:
        """``POST /invocations``; raises :class:`ModelInvocationError` with the model's message on non-2xx."""
        headers = {}
        if content_type or self.default_content_type:
            headers["Content-Type"] = content_type or self.default_content_type
        if accept:
            headers["Accept"] = accept
        status, body = self.request("POST", "/invocations", payload, headers)
        if not 200 <= status < 300:
            message = body[:MAX_ERROR_BODY].decode("utf-8", "replace").strip()
            raise ModelInvocationError(f"HTTP {status} from {self.base_url}/invocations: {message}")
        return body

    def close(self) -> None:
        """Close every connection this runtime opened. Safe to call twice."""
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()
