"""Dead-letter for model failures (opt-in): isolate the records the model rejects, score the rest.

Without it, a request (mini-batch) that still fails after its retries fails its whole input
object, as in Batch Transform. With ``dead_letter=True`` (:func:`~airflow_bt.transform.local_engine.run_transform_job`,
:func:`~airflow_bt.transform.backends.local.run_local`) the engine splits the failed request's
records in halves and sends each half again (recursively, one half at a time, each with the
job's ``ModelClientConfig`` timeout and retries) until the failing single records are
isolated. An isolated record that still fails is *rejected*:

- the other records are scored and their predictions written to ``<key>.out`` in input order,
  so the ``.out`` object holds one prediction per record that was not rejected;
- the rejected records of input object ``<key>`` go to ``<S3OutputPath>/errors/<key>.jsonl``,
  one JSON line each: ``{"object": <input uri>, "record": <1-based number in the object>,
  "message": <the model's error, at most 1000 characters>, "input": <the record as read,
  utf-8 with replacement characters, without its newline>}``. That object is written
  (create-only) *before* the ``.out`` object, so a visible ``.out`` means its errors file is
  complete; an object without rejections gets no errors file.

A single-record request (``BatchStrategy=SingleRecord``, ``SplitType=None``) that fails is
rejected without more calls. Bisection is bounded: dead-lettering gives up, and the object
fails exactly as it would without it (the usual message, then ``dead-letter gave up: <why>``), when

- the model no longer answers ``/ping`` after a failure (it crashed; the data is not to blame);
- the job's rejected records would exceed ``dead_letter_max_records`` (every rejection counts,
  across instances, including those of objects that failed anyway);
- the model rejects every record of a failed request of two or more records, or of an object of
  two or more records (the model, not the data, looks broken);
- the model looks hung: both halves of a split request time out, two single-record requests time
  out in a row, or more than :data:`MAX_TIMEOUTS_PER_OBJECT` calls time out while one object's
  records are isolated.

Only model failures (``/invocations`` errors and timeouts) are dead-lettered: a record the input
filter cannot read or a record over the payload limit still fails its object.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from airflow_bt.records import RecordProcessor, iter_records
from airflow_bt.storage import Storage, join_uri
from airflow_bt.transform.invoker import Invoker
from airflow_bt.transform.runtime import ModelInvocationError

ERRORS_FOLDER = "errors"
"""The folder under ``S3OutputPath`` that holds the rejected records."""
MAX_REJECTION_MESSAGE = 1000
MAX_TIMEOUTS_PER_OBJECT = 10
"""Timed-out calls allowed while isolating one object's records (a 1000-record batch needs about 10)."""
DEFAULT_MAX_RECORDS = 100
BROKEN = "the model, not the data, looks broken"
HUNG = "the model looks hung, not the data"


def errors_uri(output_path: str, key: str) -> str:
    """``<S3OutputPath>/errors/<key>.jsonl``: where the rejected records of input object ``key`` go."""
    return join_uri(output_path, ERRORS_FOLDER, key + ".jsonl")


def is_timeout(error: BaseException) -> bool:
    """Whether a failed request got no answer in time (rather than an error answer)."""
    return isinstance(error, TimeoutError) or isinstance(error.__cause__, TimeoutError)


def _text(record: bytes) -> str:
    if record.endswith(b"\n"):
        record = record[:-1]
    if record.endswith(b"\r"):
        record = record[:-1]
    return record.decode("utf-8", errors="replace")


class GiveUp(Exception):
    """Dead-lettering stopped for an object: it fails as it would without dead-letter; ``str`` says why."""


class RejectCounter:
    """Rejected records of the whole job: a count behind a lock, or a ``multiprocessing`` ``Value``
    that the instance processes share (pass it to :func:`~airflow_bt.transform.instance.instance_main`)."""

    def __init__(self, shared: Any = None) -> None:
        self._shared = shared
        self._lock = threading.Lock()
        self._count = 0

    def add(self, n: int) -> int:
        """Count ``n`` more rejections; the job's total."""
        if self._shared is not None:
            with self._shared.get_lock():
                self._shared.value += n
                return int(self._shared.value)
        with self._lock:
            self._count += n
            return self._count

    @property
    def total(self) -> int:
        """The job's rejected records so far."""
        return self.add(0)


@dataclass(frozen=True)
class Rejection:
    """One rejected record: its 1-based number in the object, the model's message, the record as read."""

    record: int
    message: str
    input: bytes

    def json_line(self, object_uri: str) -> bytes:
        doc = {"object": object_uri, "record": self.record, "message": self.message[:MAX_REJECTION_MESSAGE],
               "input": _text(self.input)}
        return json.dumps(doc, ensure_ascii=False).encode("utf-8", errors="replace") + b"\n"


@dataclass
class ObjectLetter:
    """One object's rejections, collected while its requests run and written before its ``.out``."""

    uri: str
    errors_uri: str
    rejections: list[Rejection] = field(default_factory=list)
    first_failure: str | None = None
    calls: int = 0
    payload_bytes: int = 0

    def content(self) -> bytes:
        """The errors object: one JSON line per rejected record, in record order."""
        return b"".join(r.json_line(self.uri) for r in sorted(self.rejections, key=lambda r: r.record))

    def commit(self, store: Storage, *, records: int) -> None:
        """Write the errors object (create-only) if any record was rejected; call it before the ``.out``
        object commits. Raises :class:`GiveUp` if the model rejected every one of two or more records."""
        if not self.rejections:
            return
        if records >= 2 and len(self.rejections) == records:
            raise GiveUp(f"the model rejected all {records} records of the object: {BROKEN}")
        store.put_bytes(self.errors_uri, self.content())

    def summary(self) -> str | None:
        """``record 17: <message>`` for the first rejected record, for the task log."""
        if not self.rejections:
            return None
        first = min(self.rejections, key=lambda r: r.record)
        return f"record {first.record}: {first.message[:200]}"


Outcome = tuple[int, int, bytes | None, str | None]
"""``(start, end, answer, message)`` for records ``start:end`` of a request (0-based offsets): an
answer for the range, or ``None`` and the model's message for one rejected record."""
Piece = tuple[bytes, list[bytes] | None, int]
"""``(answer, input records or None, number of the first record)``: an answered run of records."""


class Bisector:
    """Isolates the records of failed requests that the model rejects, within the bounds above.

    One per instance (its state spans objects: two single-record requests in a row that time
    out give up even across objects). ``ping`` tells whether the model is still up.
    """

    def __init__(self, invoker: Invoker, ping: Callable[[], bool], counter: RejectCounter, *,
                 max_records: int, split_type: str = "Line", processor: RecordProcessor | None = None) -> None:
        if max_records < 0:
            raise ValueError(f"dead_letter_max_records must be >= 0, got {max_records}")
        self.invoker = invoker
        self.split_type = split_type
        self.processor = processor
        self.ping = ping
        self.counter = counter
        self.max_records = max_records
        self.timeouts_in_a_row = 0
        self._letter: ObjectLetter | None = None
        self._timeouts = 0
        self._first = 1

    def start_object(self, letter: ObjectLetter) -> None:
        """Collect the next rejections into ``letter``."""
        self._letter = letter
        self._timeouts = 0

    def answered(self) -> None:
        """A request got an answer: the model is not hung."""
        self.timeouts_in_a_row = 0

    def recover(self, failure: str, payload: bytes, n: int, originals: list[bytes] | None,
                error: ModelInvocationError, *, first: int) -> list[Piece]:
        """Isolate the rejected records of a failed request of ``n`` records (the first is record
        ``first`` of the object; ``originals``: the records as read, when an input filter changed
        them); note them in the object's letter; the answered runs of the others, in order.
        ``failure`` is the message the object would fail with. Raises :class:`GiveUp`."""
        letter = self._letter
        assert letter is not None, "start_object() first"
        if letter.first_failure is None:
            letter.first_failure = failure
        records = self._records_of(payload, n, originals)
        inputs = originals if originals is not None else records
        pieces: list[Piece] = []
        for start, end, answer, message in self.isolate(records, error, first=first):
            if answer is None:
                letter.rejections.append(Rejection(first + start, message or "", inputs[start]))
            else:
                pieces.append((answer, originals[start:end] if originals is not None else None, first + start))
        return pieces

    def _records_of(self, payload: bytes, n: int, originals: list[bytes] | None) -> list[bytes]:
        """The records a request sent, one by one (the input filter is applied again to the originals)."""
        if originals is not None and self.processor is not None:
            return [self.processor.filter_record(record) for record in originals]
        if n == 1:
            return [payload]
        records = list(iter_records(io.BytesIO(payload), self.split_type))
        if len(records) != n:  # pragma: no cover - the splitters frame every record they yield
            raise RuntimeError(f"a request of {n} records splits into {len(records)} records")
        return records

    def isolate(self, records: list[bytes], error: ModelInvocationError, *, first: int) -> list[Outcome]:
        """The outcomes covering ``records`` (a request that failed with ``error``; ``first`` is the
        1-based number of its first record in the object), in order.

        Each rejection is counted; raises :class:`GiveUp` when a bound above is reached.
        """
        self._first = first
        self._check_alive()
        if self.counter.total > self.max_records:
            raise GiveUp(f"more than {self.max_records} records rejected by the model in this job: {BROKEN}")
        if len(records) == 1:
            if is_timeout(error):
                self.timeouts_in_a_row += 1
                if self.timeouts_in_a_row >= 2:
                    raise GiveUp(f"{self.timeouts_in_a_row} single-record requests in a row timed out: {HUNG}")
            return [self._reject(0, error)]
        outcomes = self._split(records, 0, len(records))
        if all(answer is None for _, _, answer, _ in outcomes):
            raise GiveUp(f"the model rejected all {len(records)} records of the request: {BROKEN}")
        return outcomes

    def _check_alive(self) -> None:
        try:
            alive = self.ping()
        except Exception:
            alive = False
        if not alive:
            raise GiveUp("the model no longer answers /ping: it looks crashed, not the data")

    def _reject(self, offset: int, error: BaseException) -> Outcome:
        if self.counter.add(1) > self.max_records:
            raise GiveUp(f"more than {self.max_records} records rejected by the model in this job: {BROKEN}")
        return offset, offset + 1, None, str(error)[:MAX_REJECTION_MESSAGE]

    def _call(self, records: list[bytes], start: int, end: int) -> bytes | ModelInvocationError:
        """Send records ``start:end`` as one request (the caller's slot is free: one call at a time)."""
        payload = b"".join(records[start:end])
        letter = self._letter
        if letter is not None:
            letter.calls += 1
            letter.payload_bytes += len(payload)
        try:
            response = self.invoker.result(self.invoker.submit(payload))
        except ModelInvocationError as exc:
            if is_timeout(exc):
                self._timeouts += 1
                if self._timeouts > MAX_TIMEOUTS_PER_OBJECT:
                    raise GiveUp(f"more than {MAX_TIMEOUTS_PER_OBJECT} calls timed out while isolating the "
                                 f"rejected records: {HUNG}") from None
            else:
                self._check_alive()
            return exc
        self.answered()
        return response

    def _split(self, records: list[bytes], start: int, end: int) -> list[Outcome]:
        mid = (start + end) // 2
        halves = [(start, mid, self._call(records, start, mid))]
        halves.append((mid, end, self._call(records, mid, end)))
        if all(isinstance(r, ModelInvocationError) and is_timeout(r) for _, _, r in halves):
            raise GiveUp(f"both halves of records {self._first + start}-{self._first + end - 1} timed out: "
                         f"{HUNG}")
        outcomes: list[Outcome] = []
        for lo, hi, result in halves:
            if isinstance(result, bytes):
                outcomes.append((lo, hi, result, None))
            elif hi - lo == 1:
                outcomes.append(self._reject(lo, result))
            else:
                outcomes.extend(self._split(records, lo, hi))
        return outcomes
