"""One transform instance: a model runtime plus the loop that turns input objects into ``.out`` objects.

An instance runs in the engine's process (``InstanceCount=1``) or in a spawned worker
process (:func:`instance_main`); either way it reports through ``sink(event)`` with
picklable tuples:

- ``("started", instance, Knobs)``
- ``("progress", instance, object_index, key, records_so_far, seconds_so_far)`` (at most once a second)
- ``("object", instance, ObjectResult)``
- ``("failed", instance, message)``: the model could not start; none of its objects ran
- ``("done", instance)``: always last

With ``InstanceSpec.dead_letter`` a failed request is bisected to isolate the records the model
rejects (:mod:`airflow_bt.transform.dead_letter`).
"""

from __future__ import annotations

import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

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
from airflow_bt.transform.invoker import Call, Invoker
from airflow_bt.transform.plan import InputObject, Knobs, initial_knobs, resolve_knobs
from airflow_bt.transform.runtime import (
    EMBEDDED,
    START_TIMEOUT_ENV,
    EnginePolicy,
    ModelInvocationError,
    ModelRuntime,
    ModelRuntimeError,
    batch_environment,
    open_runtime,
    start_timeout_s,
)
from airflow_bt.transform.runtime.children import die_with_parent, watch_parent_pipe

Event = tuple[Any, ...]
Sink = Callable[[Event], None]
PROGRESS_EVERY_S = 1.0
START_TIMEOUT_GRACE_S = 30.0
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


@dataclass(frozen=True)
class ObjectResult:
    """How one input object went. ``error`` is ``None`` when its ``.out`` object was written.

    ``records`` counts the records scored; ``rejected`` those the model rejected (dead-letter),
    written to ``errors_uri`` (``first_rejected``: ``record <n>: <message>`` of the first one).
    """

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
    rejected: int = 0
    errors_uri: str | None = None
    first_rejected: str | None = None


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

    def __init__(self, spec: InstanceSpec, sink: Sink, rejected: RejectCounter | None = None) -> None:
        self.spec = spec
        self.sink = sink
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

    def run(self) -> None:
        """Start the model, transform every object, report; never raises."""
        i = self.spec.instance
        try:
            try:
                self.spec.policy.check_model(self.spec.model_request)
                self.runtime = open_runtime(self.spec.model_request, storage_for=self.storage_for,
                                            invocation_timeout_s=self.timeout_s,
                                            isolate_handler=self.spec.policy.isolate_model_code)
                self.knobs = self._start_model(self.runtime)
            except Exception as exc:
                name = self.spec.model_request.get("ModelName")
                message = f"model {name!r} could not start: {type(exc).__name__}: {exc}"
                self.sink(("failed", i, message[:_MAX_MESSAGE]))
                return
            self.sink(("started", i, self.knobs))
            self.invoker = Invoker(self.runtime, self.content_type, self.accept, timeout_s=self.timeout_s,
                                   max_retries=self.max_retries, slots=self.knobs.max_concurrent_transforms,
                                   name=f"bt-{i}")
            if self.spec.dead_letter:
                self.bisector = Bisector(self.invoker, self.runtime.ping, self.counter,
                                         max_records=self.spec.dead_letter_max_records,
                                         split_type=self.split_type, processor=self.processor)
            for obj in self.spec.objects:
                self.sink(("object", i, self.transform_object(obj)))
        except Exception as exc:  # a bug, or the sink failing: report it rather than hang the engine
            message = f"instance {i} crashed: {type(exc).__name__}: {exc}\n{traceback.format_exc()}"
            self.sink(("failed", i, message))
        finally:
            if self.invoker is not None:
                self.invoker.close()
            if self.runtime is not None:
                self.runtime.close()
            self.sink(("done", i))

    def _start_model(self, runtime: ModelRuntime) -> Knobs:
        """Start the container, check ``/ping``, ask ``/execution-parameters``; the knobs to run with.

        Runs on a daemon thread so a model that never comes up (a ``model_fn`` that hangs) fails
        the instance after ``AIRFLOW_BT_START_TIMEOUT`` seconds instead of hanging the job.
        """
        env = batch_environment(
            max_payload_in_mb=self.knobs.max_payload_in_mb, batch_strategy=self.knobs.batch_strategy,
            max_concurrent_transforms=self.knobs.max_concurrent_transforms,
            environment=self.spec.request.get("Environment"))
        outcome: list[Any] = []

        def start() -> None:
            try:
                runtime.start(env)
                if not runtime.ping():
                    raise RuntimeError("the model did not answer ping")
                outcome.append(resolve_knobs(self.spec.request, runtime.execution_parameters()))
            except BaseException as exc:  # reported by the waiting thread
                outcome.append(exc)

        starter = threading.Thread(target=start, name=f"bt-{self.spec.instance}-start", daemon=True)
        starter.start()
        limit = start_timeout_s(self.spec.model_request)
        own = getattr(runtime, "enforces_start_timeout", False)  # it fails first, with a better message
        starter.join(limit + (START_TIMEOUT_GRACE_S if own else 0.0))
        if not outcome:
            raise ModelRuntimeError(f"the model did not start within {limit:g} s ({START_TIMEOUT_ENV} in "
                                    "PrimaryContainer.Environment)")
        if isinstance(outcome[0], BaseException):
            raise outcome[0]
        knobs: Knobs = outcome[0]
        return knobs

    def transform_object(self, obj: InputObject) -> ObjectResult:
        """Write ``obj.out_uri`` from the model's answers, or nothing if any request fails."""
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
        self.sink(("progress", self.spec.instance, obj.index, obj.key, state[0], now - start))
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
        """Up to ``MaxConcurrentTransforms`` requests in flight; answers written in input order."""
        invoker, bisector = self.invoker, self.bisector
        processor = self.processor if self.processor is not None and self.processor.needs_answers else None
        assert invoker is not None
        limit = self.knobs.max_concurrent_transforms
        pending: deque[tuple[Call, int, list[bytes] | None]] = deque()
        next_at = start + PROGRESS_EVERY_S

        def drain_one() -> None:
            call, n, originals = pending.popleft()
            try:
                response = invoker.result(call)
            except ModelInvocationError as exc:
                failure = self._fail(obj, state, n, exc)
                if letter is None or bisector is None:
                    raise failure from exc
                try:
                    pieces = bisector.recover(str(failure), call.payload, n, originals, exc, first=state[0] + 1)
                except GiveUp as why:
                    raise _RequestError(f"{failure}; dead-letter gave up: {why}") from exc
                for answer, inputs, first in pieces:
                    if inputs is not None and processor is not None:
                        answer = processor.assemble(inputs, answer, uri=obj.uri, first=first)
                    self._write(out, answer)
            else:
                if bisector is not None:
                    bisector.answered()
                if originals is not None and processor is not None:
                    response = processor.assemble(originals, response, uri=obj.uri, first=state[0] + 1)
                self._write(out, response)
            state[0] += n
            state[1] += 1
            state[2] += len(call.payload)

        try:
            for payload, n, originals in items:
                if len(pending) >= limit:
                    drain_one()
                    next_at = self._tick(obj, state, start, next_at)
                pending.append((invoker.submit(payload), n, originals))
            while pending:
                drain_one()
                next_at = self._tick(obj, state, start, next_at)
        except BaseException:
            invoker.settle([call for call, _, _ in pending])  # keep the in-flight cap across objects
            raise


def instance_main(spec: InstanceSpec, queue: Any, rejected: Any = None, parent_pid: int | None = None,
                  parent_alive: Any = None) -> None:
    """Entry point of a spawned instance process: run and report through ``queue``.

    ``rejected`` is the job's shared count of dead-lettered records (a ``multiprocessing.Value``).
    The process dies with the engine: ``parent_pid`` is the engine's pid (Linux: a parent-death
    signal, and an exit if the engine is already gone), ``parent_alive`` the read end of a pipe only
    the engine writes to (anywhere: its end-of-file ends this process and the serve commands it started).
    """
    if parent_pid is not None:
        die_with_parent(parent_pid)
    if parent_alive is not None:
        watch_parent_pipe(parent_alive)
    Instance(spec, queue.put, RejectCounter(rejected)).run()
