"""Calling ``/invocations`` the way Batch Transform does: a timeout and retries per request.

``ModelClientConfig.InvocationsTimeoutInSeconds`` bounds each attempt and
``InvocationsMaxRetries`` is how many more attempts a failed or timed-out request gets.
Calls run on daemon threads the caller waits on with a deadline, so a model that never
answers (an in-process handler stuck in a loop, a container that keeps the connection
open) costs at most ``(retries + 1) x timeout`` per request and never hangs the job: the
stuck thread is abandoned (a daemon thread does not keep the process alive), a fresh one
takes its place, and the request is retried or fails its object.

Usage: ``inv = Invoker(runtime, "text/csv", "text/csv", timeout_s=60, max_retries=3, slots=4)``,
then ``inv.result(inv.submit(payload))`` for each request, and ``inv.close()``.
"""

from __future__ import annotations

import queue
import threading
import time

from airflow_bt.transform.runtime import ModelInvocationError, ModelRuntime


class Call:
    """One request and its current attempt.

    ``pending`` is held while an attempt runs; the worker releases it when the attempt ends,
    and the waiting caller's ``acquire`` takes it back (a lock hand-off is about three
    times cheaper than an ``Event``, which matters for ``SingleRecord`` jobs).
    """

    __slots__ = ("abandoned", "attempts", "deadline", "error", "payload", "pending", "response")

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.attempts = 0
        self.deadline = 0.0
        self.pending = threading.Lock()
        self.pending.acquire()
        self.response: bytes | None = None
        self.error: BaseException | None = None
        self.abandoned = False


class Invoker:
    """Runs ``runtime.invoke`` for up to ``slots`` requests at once with timeout and retries."""

    def __init__(self, runtime: ModelRuntime, content_type: str, accept: str, *, timeout_s: float,
                 max_retries: int, slots: int = 1, name: str = "bt") -> None:
        self.runtime = runtime
        self.content_type = content_type
        self.accept = accept
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self._tasks: queue.SimpleQueue[Call | None] = queue.SimpleQueue()
        self._name = name
        self._workers = 0
        self._lock = threading.Lock()
        self.abandoned_threads = 0
        for _ in range(max(1, slots)):
            self._spawn()

    def _spawn(self) -> None:
        """Start one more worker thread (a daemon: a stuck model cannot keep the process alive)."""
        with self._lock:
            self._workers += 1
            number = self._workers
        threading.Thread(target=self._work, name=f"{self._name}-invoke-{number}", daemon=True).start()

    def _work(self) -> None:
        invoke, tasks, lock = self.runtime.invoke, self._tasks, self._lock
        while True:
            call = tasks.get()
            if call is None:
                return
            response: bytes | None = None
            error: BaseException | None = None
            try:
                response = invoke(call.payload, self.content_type, self.accept)
            except BaseException as exc:  # reported to the waiting caller
                error = exc
            with lock:
                call.response, call.error = response, error
                call.pending.release()
                gone = call.abandoned
            if gone:  # its caller gave up on it and started a replacement thread
                return

    def _attempt(self, call: Call) -> None:
        call.attempts += 1
        call.deadline = time.monotonic() + self.timeout_s
        self._tasks.put(call)

    def submit(self, payload: bytes) -> Call:
        """Send a request; its first attempt starts at once on a free worker."""
        call = Call(payload)
        self._attempt(call)
        return call

    def _wait(self, call: Call) -> bool:
        """Wait for ``call`` until its deadline; if it is still running then, abandon it."""
        if call.pending.acquire(timeout=max(0.0, call.deadline - time.monotonic())):
            return True
        with self._lock:
            if call.pending.acquire(blocking=False):
                return True
            call.abandoned = True
        self.abandoned_threads += 1
        self._spawn()
        return False

    def result(self, call: Call) -> bytes:
        """The response, retrying up to ``max_retries`` times; raises :class:`ModelInvocationError`."""
        while True:
            finished = self._wait(call)
            if finished and call.error is None:
                return call.response if call.response is not None else b""
            last = call.error if finished and call.error is not None else TimeoutError(
                f"no answer within InvocationsTimeoutInSeconds={self.timeout_s:g}")
            if call.attempts > self.max_retries:
                raise ModelInvocationError(f"{type(last).__name__}: {last}") from last
            if call.abandoned:  # its thread may still write to it: retry with a fresh one
                fresh = Call(call.payload)
                fresh.attempts = call.attempts
                call = fresh
            else:
                call.response, call.error = None, None
            self._attempt(call)

    def settle(self, calls: list[Call]) -> None:
        """Wait for ``calls`` to finish or reach their deadlines (abandoning those still running)."""
        for call in calls:
            self._wait(call)

    def close(self) -> None:
        """Let idle workers exit (a stuck one is a daemon and does not hold the process)."""
        with self._lock:
            workers = self._workers
        for _ in range(workers):
            self._tasks.put(None)
