"""One transform instance: a model runtime plus the loop that turns input objects into ``.out`` objects.

An instance runs in the engine's process (``InstanceCount=1``) or in a spawned worker
process (:func:`instance_main`); either way it reports through ``sink(event)`` with the events of
:mod:`airflow_bt.transform.events` (:data:`Event`: started, progress, an object finished, failed, done).
Its model starts as :mod:`airflow_bt.transform.startup` says, within a time limit.

An instance in the engine's process stops when its ``stop`` event is set: before its next request
(or object, or while its model starts). The object it was writing then gets no ``.out`` (the write
is aborted, never committed), and no :class:`ObjectFinished` is reported for it. A worker process
stops when the engine terminates it (``SIGTERM``): :func:`instance_main` turns that into
``SystemExit``, so the object in hand is aborted the same way and the runtime is closed.

With ``InstanceSpec.dead_letter`` a failed request is bisected to isolate the records the model
rejects (:mod:`airflow_bt.transform.dead_letter`).
"""

from __future__ import annotations

import signal
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, BinaryIO, TypeAlias

from airflow_bt.faults import failpoint
from airflow_bt.records import RecordProcessor, decompressed, iter_payloads, iter_processed_payloads, payload_limit
from airflow_bt.storage import Storage, for_uri, scheme_of
from airflow_bt.transform.dead_letter import (
    DEFAULT_MAX_RECORDS,
    Bisector,
    GiveUp,
    ObjectLetter,
    RejectCounter,
    errors_uri,
)
from airflow_bt.transform.events import Event as Event
from airflow_bt.transform.events import InstanceDone as InstanceDone
from airflow_bt.transform.events import InstanceEvent as InstanceEvent
from airflow_bt.transform.events import InstanceFailed as InstanceFailed
from airflow_bt.transform.events import InstanceStarted as InstanceStarted
from airflow_bt.transform.events import ObjectFinished as ObjectFinished
from airflow_bt.transform.events import ObjectProgress as ObjectProgress
from airflow_bt.transform.events import ObjectResult as ObjectResult
from airflow_bt.transform.events import Sink as Sink
from airflow_bt.transform.invoker import Call, Invoker
from airflow_bt.transform.plan import InputObject, Knobs, initial_knobs
from airflow_bt.transform.runtime import EMBEDDED, EnginePolicy, ModelInvocationError, ModelRuntime, open_runtime
from airflow_bt.transform.runtime.children import die_with_parent, watch_parent_pipe
from airflow_bt.transform.startup import start_model

PROGRESS_EVERY_S = 1.0
STOP_POLL_S = 0.1  # how often a model start that is waited for looks at the stop event
_MAX_MESSAGE = 2000


@dataclass(frozen=True)
class InstanceSpec:
    """Everything an instance needs; picklable (plain data and portable storages, no Airflow objects).

    ``policy``: what the instance may open and run (:mod:`~airflow_bt.transform.runtime.policy`); every
    storage it uses comes from :meth:`Instance.storage_for`, which applies it.
    """

    instance: int
    request: dict[str, Any]
    model_request: dict[str, Any]
    objects: list[InputObject]
    storages: dict[str, Storage] = field(default_factory=dict)
    dead_letter: bool = False
    dead_letter_max_records: int = DEFAULT_MAX_RECORDS
    policy: EnginePolicy = EMBEDDED


_InFlight: TypeAlias = tuple[Call, int, list[bytes] | None]  # a request, its record count, its inputs


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


class _Stopped(Exception):
    """The stop event is set: the instance ends before its next request."""


class Instance:
    """Runs :class:`InstanceSpec`'s objects through one model runtime, reporting to ``sink``.

    ``stop``: when set, the instance ends before its next request (see the module docstring).
    """

    def __init__(self, spec: InstanceSpec, sink: Sink, rejected: RejectCounter | None = None,
                 stop: threading.Event | None = None) -> None:
        self.spec = spec
        self.sink = sink
        self.stop = stop
        self.counter = rejected or RejectCounter()
        self.bisector: Bisector | None = None
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
        self.invoker: Invoker | None = None
        self.processor = RecordProcessor.from_request(req)
        self.knobs = initial_knobs(req)

    def storage_for(self, uri: str) -> Storage:
        """The storage for ``uri``, if the policy lets the engine open it (else :class:`PolicyError`)."""
        self.spec.policy.check_uri(uri)
        scheme = scheme_of(uri)
        store = self.spec.storages.get(scheme)
        return store if store is not None else for_uri(uri, aws_conn_id=None)

    def stopping(self) -> bool:
        """Whether the stop event is set."""
        return self.stop is not None and self.stop.is_set()

    def _check_stop(self) -> None:
        if self.stopping():
            raise _Stopped

    def run(self) -> None:
        """Start the model, transform every object, report; never raises (but ``SystemExit`` in a worker)."""
        i = self.spec.instance
        try:
            self._check_stop()
            if not self._open():
                return
            for obj in self.spec.objects:
                self._check_stop()
                self.sink(ObjectFinished(i, self.transform_object(obj)))
        except _Stopped:
            pass  # the engine knows: it set the event
        except Exception as exc:  # a bug, or the sink failing: report it rather than hang the engine
            message = f"instance {i} crashed: {type(exc).__name__}: {exc}\n{traceback.format_exc()}"
            self.sink(InstanceFailed(i, message))
        finally:
            if self.invoker is not None:
                self.invoker.close()
            if self.runtime is not None:
                self.runtime.close()
            self.sink(InstanceDone(i))

    def _open(self) -> bool:
        """Start the model and the invoker (and the bisector); ``False`` (reported) if the model cannot start."""
        i = self.spec.instance
        try:
            self.spec.policy.check_model(self.spec.model_request)
            self.runtime = open_runtime(self.spec.model_request, storage_for=self.storage_for,
                                        invocation_timeout_s=self.timeout_s,
                                        isolate_handler=self.spec.policy.isolate_model_code)
            self.knobs = self._start_model(self.runtime)
        except _Stopped:
            raise
        except Exception as exc:
            name = self.spec.model_request.get("ModelName")
            message = f"model {name!r} could not start: {type(exc).__name__}: {exc}"
            self.sink(InstanceFailed(i, message[:_MAX_MESSAGE]))
            return False
        self.sink(InstanceStarted(i, self.knobs))
        self.invoker = Invoker(self.runtime, self.content_type, self.accept, timeout_s=self.timeout_s,
                               max_retries=self.max_retries, slots=self.knobs.max_concurrent_transforms,
                               name=f"bt-{i}")
        if self.spec.dead_letter:
            self.bisector = Bisector(self.invoker, self.runtime.ping, self.counter,
                                     max_records=self.spec.dead_letter_max_records,
                                     split_type=self.split_type, processor=self.processor)
        return True

    def _start_model(self, runtime: ModelRuntime) -> Knobs:
        """Start the model (:func:`~airflow_bt.transform.startup.start_model`); the knobs to run with.

        A stop while it starts ends the wait at once (:class:`_Stopped`, from :meth:`_join`).
        """
        return start_model(runtime, self.spec.request, self.spec.model_request, self.knobs,
                           instance=self.spec.instance, join=self._join)

    def _join(self, thread: threading.Thread, timeout: float) -> None:
        """``thread.join(timeout)``, looking at the stop event every :data:`STOP_POLL_S` seconds."""
        if self.stop is None:
            thread.join(timeout)
            return
        deadline = time.monotonic() + timeout
        while thread.is_alive() and time.monotonic() < deadline:
            thread.join(min(STOP_POLL_S, max(0.0, deadline - time.monotonic())))
            self._check_stop()

    def transform_object(self, obj: InputObject) -> ObjectResult:
        """Write ``obj.out_uri`` from the model's answers, or nothing if any request fails.

        Raises :class:`_Stopped` (having written nothing) if the stop event is set before it is done.
        """
        start = time.monotonic()
        state = [0, 0, 0]  # records, requests, payload bytes
        counter: _Counting | None = None
        error: str | None = None
        letter: ObjectLetter | None = None
        if self.bisector is not None:
            letter = ObjectLetter(obj.uri, errors_uri(self.spec.request["TransformOutput"]["S3OutputPath"], obj.key))
            self.bisector.start_object(letter)
        try:
            with self.storage_for(obj.uri).open_read(obj.uri) as raw:
                counter = _Counting(raw)
                stream = decompressed(counter, self.compression)  # type: ignore[arg-type]
                payloads = self._payloads(stream, obj.uri)
                with self.storage_for(obj.out_uri).open_write(obj.out_uri) as out:
                    self._requests(obj, payloads, out, state, start, letter)
                    if letter is not None:  # the errors object commits before the .out object
                        letter.commit(self.storage_for(letter.errors_uri), records=state[0])
            failpoint("transform.after_output", obj.out_uri)
        except _Stopped:
            raise  # out of the open_write block above: the partial object is discarded, never committed
        except GiveUp as why:
            error = f"{letter.first_failure if letter else obj.uri}; dead-letter gave up: {why}"
        except _RequestError as exc:
            error = str(exc)
        except Exception as exc:
            msg = str(exc)
            error = msg if obj.uri in msg else f"{obj.uri}: {type(exc).__name__}: {msg}"
        dl = letter or ObjectLetter(obj.uri, "")
        rejected = len(dl.rejections) if error is None else 0
        return ObjectResult(
            index=obj.index, key=obj.key, uri=obj.uri, out_uri=obj.out_uri, records=state[0] - len(dl.rejections),
            requests=state[1] + dl.calls, bytes_in=counter.count if counter else 0,
            payload_bytes=state[2] + dl.payload_bytes, seconds=time.monotonic() - start,
            error=error[:_MAX_MESSAGE] if error else None, rejected=rejected,
            errors_uri=dl.errors_uri if rejected else None, first_rejected=dl.summary() if rejected else None,
        )

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
        self.sink(ObjectProgress(self.spec.instance, obj.index, obj.key, state[0], now - start))
        return now + PROGRESS_EVERY_S

    def _payloads(self, stream: BinaryIO, uri: str) -> Iterator[tuple[bytes, int, list[bytes] | None]]:
        knobs = self.knobs
        if self.processor is None:
            for payload, n in iter_payloads(stream, split_type=self.split_type, batch_strategy=knobs.batch_strategy,
                                            max_payload_in_mb=knobs.max_payload_in_mb, uri=uri):
                yield payload, n, None
        else:
            yield from iter_processed_payloads(stream, self.processor, split_type=self.split_type,
                                               batch_strategy=knobs.batch_strategy,
                                               limit=payload_limit(knobs.max_payload_in_mb), uri=uri,
                                               keep_inputs=self.bisector is not None)

    def _requests(self, obj: InputObject, items: Iterator[tuple[bytes, int, list[bytes] | None]], out: BinaryIO,
                  state: list[int], start: float, letter: ObjectLetter | None = None) -> None:
        """Up to ``MaxConcurrentTransforms`` requests in flight; answers written in input order.

        The stop event is looked at before each request is sent and before each answer is waited for.
        """
        invoker = self.invoker
        assert invoker is not None
        limit = self.knobs.max_concurrent_transforms
        pending: deque[_InFlight] = deque()
        next_at = start + PROGRESS_EVERY_S
        try:
            for payload, n, originals in items:
                self._check_stop()
                if len(pending) >= limit:
                    self._answer(obj, pending.popleft(), out, state, letter)
                    next_at = self._tick(obj, state, start, next_at)
                    self._check_stop()
                pending.append((invoker.submit(payload), n, originals))
            while pending:
                self._check_stop()
                self._answer(obj, pending.popleft(), out, state, letter)
                next_at = self._tick(obj, state, start, next_at)
        except BaseException:
            if not self.stopping():  # no object follows a stop: the requests in flight finish on their own
                invoker.settle([call for call, _, _ in pending])  # keep the in-flight cap across objects
            raise

    @property
    def _assembler(self) -> RecordProcessor | None:
        """The record processor, if it joins inputs to answers (``JoinSource``/``OutputFilter``)."""
        return self.processor if self.processor is not None and self.processor.needs_answers else None

    def _answer(self, obj: InputObject, item: _InFlight, out: BinaryIO,
                state: list[int], letter: ObjectLetter | None) -> None:
        """Wait for one request's answer and write it (or, with dead-letter, what the bisection recovered)."""
        assert self.invoker is not None
        call, n, originals = item
        processor = self._assembler
        try:
            response = self.invoker.result(call)
        except ModelInvocationError as exc:
            self._recover(obj, item, out, state, letter, exc)
        else:
            if self.bisector is not None:
                self.bisector.answered()
            if originals is not None and processor is not None:
                response = processor.assemble(originals, response, uri=obj.uri, first=state[0] + 1)
            self._write(out, response)
        state[0] += n
        state[1] += 1
        state[2] += len(call.payload)

    def _recover(self, obj: InputObject, item: _InFlight, out: BinaryIO,
                 state: list[int], letter: ObjectLetter | None, exc: ModelInvocationError) -> None:
        """A request failed: fail the object, or (dead-letter) write the answers of the records the model takes."""
        call, n, originals = item
        failure = self._fail(obj, state, n, exc)
        if letter is None or self.bisector is None:
            raise failure from exc
        processor = self._assembler
        try:
            pieces = self.bisector.recover(str(failure), call.payload, n, originals, exc, first=state[0] + 1)
        except GiveUp as why:
            raise _RequestError(f"{failure}; dead-letter gave up: {why}") from exc
        for answer, inputs, first in pieces:
            if inputs is not None and processor is not None:
                answer = processor.assemble(inputs, answer, uri=obj.uri, first=first)
            self._write(out, answer)


def instance_main(spec: InstanceSpec, queue: Any, rejected: Any = None, parent_pid: int | None = None,
                  parent_alive: Any = None) -> None:
    """Entry point of a spawned instance process: run and report through ``queue``.

    ``rejected`` is the job's shared count of dead-lettered records (a ``multiprocessing.Value``).
    The process dies with the engine: ``parent_pid`` is the engine's pid (Linux: a parent-death
    signal, and an exit if the engine is already gone), ``parent_alive`` the read end of a pipe only
    the engine writes to (anywhere: its end-of-file ends this process and the serve commands it started).
    The engine stops the process with ``SIGTERM`` (a stop, or an error): it raises ``SystemExit`` here,
    so an object being written is aborted (no ``.out``, no temp file left) and the runtime is closed.
    """
    from airflow_bt.transform.runtime.output import set_instance

    set_instance(spec.instance)  # its model's output lines name the instance (the service's log streams)
    if parent_pid is not None:
        die_with_parent(parent_pid)
    if parent_alive is not None:
        watch_parent_pipe(parent_alive)
    stop = threading.Event()

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        stop.set()  # so nothing waits for the requests in flight on the way out
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, on_sigterm)  # in the worker process's main thread
    Instance(spec, queue.put, RejectCounter(rejected), stop=stop).run()
