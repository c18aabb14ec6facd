"""Timeouts and retries per ModelClientConfig, with a runtime that can hang forever."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import pytest

from airflow_bt.transform.invoker import Invoker
from airflow_bt.transform.runtime import ModelInvocationError


class Scripted:
    """A runtime answering by payload: ``hang`` blocks until released, ``fail`` raises, else echoes."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls: list[bytes] = []
        self.lock = threading.Lock()

    def start(self, environment: Mapping[str, str]) -> None:
        pass

    def ping(self) -> bool:
        return True

    def execution_parameters(self) -> dict[str, Any] | None:
        return None

    def invoke(self, payload: bytes, content_type: str, accept: str) -> bytes:
        with self.lock:
            self.calls.append(payload)
        if payload == b"hang":
            self.release.wait()
        if payload == b"fail":
            raise ValueError("nope")
        return payload.upper()

    def close(self) -> None:
        pass


def test_answers_come_back_in_any_order_of_waiting() -> None:
    inv = Invoker(Scripted(), "text/csv", "text/csv", timeout_s=5, max_retries=0, slots=3)
    calls = [inv.submit(p) for p in (b"a", b"b", b"c")]
    assert [inv.result(c) for c in reversed(calls)] == [b"C", b"B", b"A"]
    inv.close()


def test_failures_are_retried_then_reported_with_the_last_error() -> None:
    runtime = Scripted()
    inv = Invoker(runtime, "text/csv", "text/csv", timeout_s=5, max_retries=2)
    with pytest.raises(ModelInvocationError, match=r"^ValueError: nope$"):
        inv.result(inv.submit(b"fail"))
    assert runtime.calls == [b"fail"] * 3
    inv.close()


def test_a_hung_call_is_abandoned_retried_and_the_invoker_keeps_working() -> None:
    runtime = Scripted()
    inv = Invoker(runtime, "text/csv", "text/csv", timeout_s=0.2, max_retries=1, slots=1, name="hung")
    with pytest.raises(ModelInvocationError, match=r"^TimeoutError: no answer within "
                                                   r"InvocationsTimeoutInSeconds=0\.2$"):
        inv.result(inv.submit(b"hang"))
    assert runtime.calls == [b"hang", b"hang"] and inv.abandoned_threads == 2
    assert inv.result(inv.submit(b"ok")) == b"OK"  # a fresh worker took the stuck one's place
    hung = [t for t in threading.enumerate() if t.name.startswith("hung-invoke") and t.daemon]
    assert len(hung) == 3  # two stuck (daemon threads: they never hold the process) + one serving
    runtime.release.set()  # the stuck calls return; their threads exit instead of serving again
    for thread in hung:
        if thread.name in ("hung-invoke-1", "hung-invoke-2"):
            thread.join(5)
            assert not thread.is_alive()
    inv.close()


def test_settle_waits_for_calls_in_flight_until_their_deadline() -> None:
    runtime = Scripted()
    inv = Invoker(runtime, "text/csv", "text/csv", timeout_s=0.2, max_retries=0, slots=2)
    calls = [inv.submit(b"hang"), inv.submit(b"x")]
    inv.settle(calls)
    assert inv.abandoned_threads == 1 and calls[0].abandoned and not calls[1].abandoned
    runtime.release.set()
    inv.close()
