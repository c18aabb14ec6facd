"""A fault-injecting HTTP proxy in front of a moto S3 server, for storage fault tests.

Clients (boto3 with ``endpoint_url``/``AWS_ENDPOINT_URL_S3`` set to :attr:`S3FaultProxy.url`)
talk to the proxy on 127.0.0.1; it forwards to an in-process ``ThreadedMotoServer`` and, on a
deterministic schedule, answers instead with what S3 sends when it is unwell:

- ``InternalError``: ``500`` with S3's XML error body, not forwarded;
- ``SlowDown``: ``503`` throttling, not forwarded;
- ``ServiceUnavailable``: ``503``, not forwarded;
- ``LostResponse``: forwarded (so it takes effect in moto), then answered with ``500
  InternalError``, as when a response is lost between S3 and the client. A retried
  create-only PUT then meets its own object.

The schedule is counter-based, so a run's faults do not depend on chance: the n-th first
attempt *of each HTTP method* gets ``pattern[n % len(pattern)]``. A pattern entry is a fault
kind, ``None`` (pass), or ``(kind, times)``: that request's first ``times`` attempts all fail
(a burst, as when S3 throttles a prefix for a while). Attempts are told apart by botocore's
``amz-sdk-request: attempt=N`` header, and a request by its ``amz-sdk-invocation-id``, so
retries never advance the schedule. Counting per method keeps the schedule independent of how
a reading thread and a writing thread interleave.

Every request and fault is counted (:attr:`S3FaultProxy.requests`, :meth:`S3FaultProxy.faults`)
so a test can assert that faults were injected and retried.
"""

from __future__ import annotations

import collections
import http.client
import re
import threading
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

INTERNAL_ERROR = "InternalError"
SLOW_DOWN = "SlowDown"
SERVICE_UNAVAILABLE = "ServiceUnavailable"
LOST_RESPONSE = "LostResponse"
FAULT_KINDS = (INTERNAL_ERROR, SLOW_DOWN, SERVICE_UNAVAILABLE, LOST_RESPONSE)

#: What the proxy answers for each fault kind: (status, S3 error code, message, forward first).
_ANSWERS = {
    INTERNAL_ERROR: (500, "InternalError", "We encountered an internal error. Please try again.", False),
    SLOW_DOWN: (503, "SlowDown", "Please reduce your request rate.", False),
    SERVICE_UNAVAILABLE: (503, "ServiceUnavailable", "Service is unable to handle request.", False),
    LOST_RESPONSE: (500, "InternalError", "We encountered an internal error. Please try again.", True),
}

Step = str | tuple[str, int] | None

#: Half of the first attempts of each method fail, each kind in turn; every 10th request of a
#: method meets a burst of four InternalErrors (five attempts in all: more than botocore's default
#: budget of three, fewer than S3Storage's ten).
DEFAULT_PATTERN: tuple[Step, ...] = (
    INTERNAL_ERROR, None, LOST_RESPONSE, None, SLOW_DOWN, None, SERVICE_UNAVAILABLE, None,
    (INTERNAL_ERROR, 4), None,
)

_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
               "expect", "content-length"}
_ATTEMPT = re.compile(r"attempt=(\d+)")


@dataclass(frozen=True)
class Fault:
    """One injected fault: what was asked, which attempt, and (for lost responses) moto's real status."""

    kind: str
    method: str
    path: str
    attempt: int
    create_only: bool
    upstream_status: int | None = None


class S3FaultProxy:
    """The proxy; use :func:`running` or call :meth:`start` and :meth:`stop`.

    ``pattern=()`` injects nothing (a clean run through the same path); ``methods`` limits the
    schedule to those HTTP methods (others always pass).
    """

    def __init__(self, upstream: tuple[str, int], pattern: Sequence[Step] = DEFAULT_PATTERN,
                 methods: Collection[str] | None = None) -> None:
        self.upstream = upstream
        self.pattern = tuple(pattern)
        self.methods = set(methods) if methods is not None else None
        self.requests: collections.Counter[str] = collections.Counter()  # by method, every attempt
        self.retries = 0  # requests with attempt > 1
        self.log: list[Fault] = []
        self._lock = threading.Lock()
        self._first_attempts: collections.Counter[str] = collections.Counter()
        self._bursts: dict[str, tuple[str, int]] = {}  # invocation id -> (kind, times)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the proxy first"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        handler = type("_BoundHandler", (_Handler,), {"proxy": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="s3-fault-proxy",
                                        daemon=True)  # polls for shutdown() every 50 ms
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(10)

    def faults(self, kind: str | None = None, method: str | None = None, *, create_only: bool | None = None
               ) -> list[Fault]:
        """The faults injected so far, optionally only one kind / method / create-only PUTs."""
        with self._lock:
            return [f for f in self.log if (kind is None or f.kind == kind) and (method is None or f.method == method)
                    and (create_only is None or f.create_only == create_only)]

    def counts(self) -> dict[str, int]:
        """Faults injected so far by kind (every kind present, zero if none)."""
        found = collections.Counter(f.kind for f in self.faults())
        return {kind: found[kind] for kind in FAULT_KINDS}

    def decide(self, method: str, attempt: int, invocation: str) -> str | None:
        """The fault kind for this attempt of a request, or None to pass it through; advances the schedule."""
        with self._lock:
            self.requests[method] += 1
            if attempt > 1:
                self.retries += 1
                burst = self._bursts.get(invocation)
                return burst[0] if burst and attempt <= burst[1] else None
            if not self.pattern or (self.methods is not None and method not in self.methods):
                return None
            step = self.pattern[self._first_attempts[method] % len(self.pattern)]
            self._first_attempts[method] += 1
            if isinstance(step, tuple):
                self._bursts[invocation] = step
                return step[0]
            return step

    def record(self, fault: Fault) -> None:
        with self._lock:
            self.log.append(fault)


class _Handler(BaseHTTPRequestHandler):
    """Reads one request, asks the proxy's schedule, then forwards, fails, or both."""

    proxy: S3FaultProxy
    protocol_version = "HTTP/1.1"  # keep-alive, and "Expect: 100-continue" is answered for us
    disable_nagle_algorithm = True  # headers and body are separate writes: no 40 ms delayed-ACK stalls

    def do_GET(self) -> None:
        self._handle()

    do_PUT = do_POST = do_DELETE = do_HEAD = do_GET

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _handle(self) -> None:
        body = self._read_body()
        attempt_header = _ATTEMPT.search(self.headers.get("amz-sdk-request", ""))
        attempt = int(attempt_header.group(1)) if attempt_header else 1
        invocation = self.headers.get("amz-sdk-invocation-id", "")
        kind = self.proxy.decide(self.command, attempt, invocation)
        create_only = self.command == "PUT" and self.headers.get("If-None-Match") == "*"
        if kind is None:
            self._relay(*self._forward(body))
            return
        status, code, message, forward = _ANSWERS[kind]
        upstream = self._forward(body)[0] if forward else None
        self.proxy.record(Fault(kind, self.command, self.path, attempt, create_only, upstream))
        self._fail(status, code, message)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(*self.proxy.upstream, timeout=30)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            if body or self.command in ("PUT", "POST"):
                headers["Content-Length"] = str(len(body))
            conn.request(self.command, self.path, body=body, headers=headers)
            response = conn.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            conn.close()

    def _relay(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response_only(status)
        length = None
        for name, value in headers:
            if name.lower() == "content-length":
                length = value
            elif name.lower() not in _HOP_BY_HOP:
                self.send_header(name, value)
        # A HEAD answer carries the object's length and no body.
        self.send_header("Content-Length", length if self.command == "HEAD" and length else str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _fail(self, status: int, code: str, message: str) -> None:
        request_id = f"FAULT{len(self.proxy.log):06d}"
        body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
                f"<Resource>{self.path.split('?')[0]}</Resource><RequestId>{request_id}</RequestId>"
                "<HostId>s3-fault-proxy</HostId></Error>").encode()
        self.send_response_only(status)
        self.send_header("x-amz-request-id", request_id)
        self.send_header("Content-Type", "application/xml")
        if self.command == "HEAD":  # S3 answers HEAD errors without a body
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@contextmanager
def moto_server() -> Iterator[tuple[str, int]]:
    """An in-process moto server on a free loopback port; yields its (host, port)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        yield server.get_host_and_port()
    finally:
        server.stop()


@contextmanager
def running(upstream: tuple[str, int], pattern: Sequence[Step] = DEFAULT_PATTERN,
            methods: Collection[str] | None = None) -> Iterator[S3FaultProxy]:
    """A started :class:`S3FaultProxy` in front of ``upstream``; stopped on exit."""
    proxy = S3FaultProxy(upstream, pattern, methods)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()
