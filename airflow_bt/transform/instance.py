"""One transform instance: a model runtime plus the loop that turns input objects into ``.out`` objects.

An instance runs in the engine's process (``InstanceCount=1``) or in a spawned worker
process (:func:`instance_main`); either way it reports through ``sink(event)`` with
picklable tuples:

- ``("started", instance, Knobs)``
- ``("progress", instance, object_index, key, records_so_far, seconds_so_far)`` (at most once a second)
- ``("object", instance, ObjectResult)``
- ``("failed", instance, message)``: the model could not start; none of its objects ran
- ``("done", instance)``: always last
"""

from __future__ import annotations

import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from airflow_bt.records import decompressed, iter_payloads
from airflow_bt.storage import Storage, for_uri, scheme_of
from airflow_bt.transform.plan import InputObject, initial_knobs, resolve_knobs
from airflow_bt.transform.runtime import ModelInvocationError, ModelRuntime, batch_environment, open_runtime

Event = tuple[Any, ...]
Sink = Callable[[Event], None]
PROGRESS_EVERY_S = 1.0
_MAX_MESSAGE = 2000


@dataclass(frozen=True)
class InstanceSpec:
    """Everything an instance needs; picklable (plain data and portable storages, no Airflow objects)."""

    instance: int
    request: dict[str, Any]
    model_request: dict[str, Any]
    objects: list[InputObject]
    storages: dict[str, Storage] = field(default_factory=dict)


@dataclass(frozen=True)
class ObjectResult:
    """How one input object went. ``error`` is ``None`` when its ``.out`` object was written."""

    index: int
    key: str
    uri: str
    out_uri: str
    records: int
    requests: int
    bytes_in: int
    payload_bytes: int
    seconds: float
    error: str | None = None


class _Counting:
    """Counts the bytes read from storage (``bytes_in``) at block granularity."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        self.count += len(data)
        return data

    def readable(self) -> bool:
        return True


class _RequestError(Exception):
    """A request failed after its retries."""


class Instance:
    """Runs :class:`InstanceSpec`'s objects through one model runtime, reporting to ``sink``."""

    def __init__(self, spec: InstanceSpec, sink: Sink) -> None:
        self.spec = spec
        self.sink = sink
        req = spec.request
        tin, tout = req["TransformInput"], req["TransformOutput"]
        self.split_type = tin.get("SplitType") or "None"
        self.compression = tin.get("CompressionType") or "None"
        self.content_type = tin.get("ContentType") or ""
        self.accept = tout.get("Accept") or ""
        self.assemble_line = tout.get("AssembleWith") == "Line"
        mcc = req.get("ModelClientConfig") or {}
        self.timeout_s = float(mcc.get("InvocationsTimeoutInSeconds") or 600)
        retries = mcc.get("InvocationsMaxRetries")
        self.max_retries = 3 if retries is None else int(retries)
        self.runtime: ModelRuntime | None = None
        self.knobs = initial_knobs(req)

    def storage_for(self, uri: str) -> Storage:
        scheme = scheme_of(uri)
        store = self.spec.storages.get(scheme)
        return store if store is not None else for_uri(uri, aws_conn_id=None)

    def run(self) -> None:
        """Start the model, transform every object, report; never raises."""
        i = self.spec.instance
        pool: ThreadPoolExecutor | None = None
        try:
            try:
                self.runtime = open_runtime(self.spec.model_request, storage_for=self.storage_for)
                env = batch_environment(
                    max_payload_in_mb=self.knobs.max_payload_in_mb, batch_strategy=self.knobs.batch_strategy,
                    max_concurrent_transforms=self.knobs.max_concurrent_transforms,
                    environment=self.spec.request.get("Environment"))
                self.runtime.start(env)
                if not self.runtime.ping():
                    raise RuntimeError("the model did not answer ping")
                self.knobs = resolve_knobs(self.spec.request, self.runtime.execution_parameters())
            except Exception as exc:
                name = self.spec.model_request.get("ModelName")
                message = f"model {name!r} could not start: {type(exc).__name__}: {exc}"
                self.sink(("failed", i, message[:_MAX_MESSAGE]))
                return
            self.sink(("started", i, self.knobs))
            if self.knobs.max_concurrent_transforms > 1:
                pool = ThreadPoolExecutor(self.knobs.max_concurrent_transforms, thread_name_prefix=f"bt-{i}")
            for obj in self.spec.objects:
                self.sink(("object", i, self.transform_object(obj, pool)))
        except Exception as exc:  # a bug, or the sink failing: report it rather than hang the engine
            message = f"instance {i} crashed: {type(exc).__name__}: {exc}\n{traceback.format_exc()}"
            self.sink(("failed", i, message))
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
            if self.runtime is not None:
                self.runtime.close()
            self.sink(("done", i))

    def transform_object(self, obj: InputObject, pool: ThreadPoolExecutor | None) -> ObjectResult:
        """Write ``obj.out_uri`` from the model's answers, or nothing if any request fails."""
        start = time.monotonic()
        state = [0, 0, 0]  # records, requests, payload bytes
        counter: _Counting | None = None
        error: str | None = None
        try:
            with self.storage_for(obj.uri).open_read(obj.uri) as raw:
                counter = _Counting(raw)
                stream = decompressed(counter, self.compression)  # type: ignore[arg-type]
                payloads = iter_payloads(stream, split_type=self.split_type,
                                         batch_strategy=self.knobs.batch_strategy,
                                         max_payload_in_mb=self.knobs.max_payload_in_mb, uri=obj.uri)
                with self.storage_for(obj.out_uri).open_write(obj.out_uri) as out:
                    if pool is None:
                        self._sequential(obj, payloads, out, state, start)
                    else:
                        self._pipelined(obj, payloads, out, state, start, pool)
        except _RequestError as exc:
            error = str(exc)
        except Exception as exc:
            msg = str(exc)
            error = msg if obj.uri in msg else f"{obj.uri}: {type(exc).__name__}: {msg}"
        return ObjectResult(
            index=obj.index, key=obj.key, uri=obj.uri, out_uri=obj.out_uri, records=state[0],
            requests=state[1], bytes_in=counter.count if counter else 0, payload_bytes=state[2],
            seconds=time.monotonic() - start, error=error[:_MAX_MESSAGE] if error else None,
        )

    def _invoke(self, payload: bytes) -> bytes:
        runtime = self.runtime
        assert runtime is not None
        last: BaseException | None = None
        for _ in range(self.max_retries + 1):
            began = time.monotonic()
            try:
                response = runtime.invoke(payload, self.content_type, self.accept)
            except Exception as exc:
                last = exc
                continue
            took = time.monotonic() - began
            if took > self.timeout_s:
                last = TimeoutError(f"the model took {took:.1f}s, over InvocationsTimeoutInSeconds="
                                    f"{self.timeout_s:g}")
                continue
            return response
        raise ModelInvocationError(f"{type(last).__name__}: {last}") from last

    def _fail(self, obj: InputObject, state: list[int], n: int, exc: BaseException) -> _RequestError:
        attempts = self.max_retries + 1
        return _RequestError(
            f"{obj.uri}: the model failed request {state[1] + 1} (records {state[0] + 1}-{state[0] + n}) "
            f"after {attempts} attempt{'s' if attempts > 1 else ''}: {exc}")

    def _write(self, out: BinaryIO, response: bytes) -> None:
        out.write(response)
        if self.assemble_line and response[-1:] != b"\n":
            out.write(b"\n")

    def _tick(self, obj: InputObject, state: list[int], start: float, next_at: float) -> float:
        now = time.monotonic()
        if now < next_at:
            return next_at
        self.sink(("progress", self.spec.instance, obj.index, obj.key, state[0], now - start))
        return now + PROGRESS_EVERY_S

    def _sequential(self, obj: InputObject, payloads: Iterator[tuple[bytes, int]], out: BinaryIO,
                    state: list[int], start: float) -> None:
        invoke, write = self._invoke, self._write
        next_at = start + PROGRESS_EVERY_S
        for payload, n in payloads:
            try:
                response = invoke(payload)
            except ModelInvocationError as exc:
                raise self._fail(obj, state, n, exc) from exc
            write(out, response)
            state[0] += n
            state[1] += 1
            state[2] += len(payload)
            next_at = self._tick(obj, state, start, next_at)

    def _pipelined(self, obj: InputObject, payloads: Iterator[tuple[bytes, int]], out: BinaryIO,
                   state: list[int], start: float, pool: ThreadPoolExecutor) -> None:
        """Up to ``MaxConcurrentTransforms`` requests in flight; answers written in input order."""
        limit = self.knobs.max_concurrent_transforms
        pending: deque[tuple[Future[bytes], int, int]] = deque()
        next_at = start + PROGRESS_EVERY_S

        def drain_one() -> None:
            future, n, size = pending.popleft()
            try:
                response = future.result()
            except ModelInvocationError as exc:
                raise self._fail(obj, state, n, exc) from exc
            self._write(out, response)
            state[0] += n
            state[1] += 1
            state[2] += size

        try:
            for payload, n in payloads:
                if len(pending) >= limit:
                    drain_one()
                    next_at = self._tick(obj, state, start, next_at)
                pending.append((pool.submit(self._invoke, payload), n, len(payload)))
            while pending:
                drain_one()
        except BaseException:
            for future, _, _ in pending:
                future.cancel()
            wait([f for f, _, _ in pending])  # keep the in-flight cap across objects
            raise


def instance_main(spec: InstanceSpec, queue: Any) -> None:
    """Entry point of a spawned instance process: run and report through ``queue``."""
    Instance(spec, queue.put).run()
