"""``DataProcessing``: input filter, join with the input, output filter, per record.

Batch Transform applies these around the model, one record at a time:

1. ``InputFilter`` selects the part of each input record sent to the model;
2. ``JoinSource=Input`` joins each *whole* input record with the model's answer for it;
3. ``OutputFilter`` selects the part of the joined record (or of the answer, without a
   join) written to the ``.out`` object.

Formats (the media type of ``ContentType`` for input, of ``Accept`` for output):

- ``text/csv``: a row is an array of its fields (strings, RFC 4180 quoting, no embedded
  newlines), so only index paths apply (``$[1:]``, ``$[0,-1]``). The join appends the
  answer's fields to the input row: ``1,2,3`` + ``0.5`` -> ``1,2,3,0.5``.
- ``application/json`` and JSON Lines (``application/jsonlines``): a record is one JSON
  value. The join adds the answer as ``SageMakerOutput`` to an input object
  (``{"id":1}`` -> ``{"id":1,"SageMakerOutput":{"label":1}}``); any other input is wrapped:
  ``{"SageMakerInput":[1,2],"SageMakerOutput":...}``. JSON is written compact, keys in order.

With a join or an output filter, the model must answer every request with one line per
record (a request of one record may get any answer: it is that record's answer).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

from airflow_bt.records.jsonpath import JsonPath
from airflow_bt.records.splitting import RecordError, iter_records, too_large

CSV_TYPES = ("text/csv",)
JSON_TYPES = ("application/json",)
JSONLINES_TYPES = ("application/jsonlines", "application/x-jsonlines", "application/jsonl")
FILTER_TYPES = CSV_TYPES + JSON_TYPES + JSONLINES_TYPES
"""Media types ``DataProcessing`` can read and write."""


class DataProcessingError(RecordError):
    """A record cannot be filtered or joined; the message names the object and record number."""


def media_type(content_type: str | None) -> str:
    """``"text/csv; charset=utf-8"`` -> ``"text/csv"``."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def record_format(content_type: str | None) -> str | None:
    """``"csv"``, ``"json"`` (JSON and JSON Lines) or ``None`` for types filters cannot read."""
    media = media_type(content_type)
    if media in CSV_TYPES:
        return "csv"
    if media in JSON_TYPES or media in JSONLINES_TYPES:
        return "json"
    return None


def is_active(data_processing: Mapping[str, Any] | None) -> bool:
    """Whether ``DataProcessing`` changes anything (a filter other than ``$``, or a join)."""
    dp = data_processing or {}
    return (dp.get("InputFilter") not in (None, "", "$") or dp.get("OutputFilter") not in (None, "", "$")
            or dp.get("JoinSource") == "Input")


def _csv_fields(line: str) -> list[str]:
    if '"' not in line:
        return line.split(",")
    return next(csv.reader([line]), [])


def _csv_field(value: Any) -> str:
    text = value if isinstance(value, str) else _json(value)
    if any(c in text for c in ',"\r\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _body(record: bytes) -> bytes:
    """A record without its line terminator."""
    if record.endswith(b"\n"):
        record = record[:-1]
    return record[:-1] if record.endswith(b"\r") else record


@dataclass(frozen=True)
class RecordProcessor:
    """The ``DataProcessing`` of one job, for records of ``in_format`` answered in ``out_format``."""

    input_filter: JsonPath
    output_filter: JsonPath
    join: bool
    in_format: str
    out_format: str
    lines: bool
    assemble_line: bool

    @classmethod
    def from_request(cls, request: Mapping[str, Any]) -> RecordProcessor | None:
        """The processor for a (validated) ``CreateTransformJob`` request; ``None`` if it has nothing to do."""
        dp = request.get("DataProcessing") or {}
        if not is_active(dp):
            return None
        tin, tout = request["TransformInput"], request["TransformOutput"]
        join = dp.get("JoinSource") == "Input"
        in_format = record_format(tin.get("ContentType")) or "csv"
        return cls(
            input_filter=JsonPath.parse(dp.get("InputFilter") or "$"),
            output_filter=JsonPath.parse(dp.get("OutputFilter") or "$"),
            join=join,
            in_format=in_format,
            out_format=in_format if join else (record_format(tout.get("Accept")) or in_format),
            lines=(tin.get("SplitType") or "None") == "Line",
            assemble_line=tout.get("AssembleWith") == "Line",
        )

    @property
    def needs_answers(self) -> bool:
        """Whether responses are split into per-record answers (a join or an output filter)."""
        return self.join or not self.output_filter.is_root

    def _decode(self, body: bytes, fmt: str) -> Any:
        text = body.decode("utf-8")
        if fmt == "csv":
            return _csv_fields(text)
        return json.loads(text)

    def _encode(self, value: Any, fmt: str) -> bytes:
        if fmt == "csv":
            row = value if isinstance(value, list) else [value]
            return ",".join(_csv_field(v) for v in row).encode("utf-8")
        return _json(value).encode("utf-8")

    def filter_record(self, record: bytes) -> bytes:
        """What the model gets for ``record`` (same framing: a ``Line`` record keeps its newline)."""
        if self.input_filter.is_root:
            return record
        selected = self.input_filter.select(self._decode(_body(record), self.in_format))
        return self._encode(selected, self.in_format) + (b"\n" if self.lines else b"")

    def answers(self, response: bytes, count: int) -> list[bytes]:
        """Split a response to ``count`` records into one answer per record."""
        if count == 1:
            return [_body(response)]
        lines = response.split(b"\n")
        if lines and not lines[-1]:
            lines.pop()
        if len(lines) != count:
            raise ValueError(f"the model answered {count} records with {len(lines)} lines; a join or an "
                             "output filter needs one line per record (or BatchStrategy=SingleRecord)")
        return [line[:-1] if line.endswith(b"\r") else line for line in lines]

    def _joined(self, record: bytes, answer: bytes) -> Any:
        body = _body(record)
        if self.in_format == "csv":
            return _csv_fields(body.decode("utf-8")) + _csv_fields(answer.decode("utf-8"))
        source = json.loads(body.decode("utf-8"))
        try:
            output = json.loads(answer.decode("utf-8"))
        except ValueError:
            raise ValueError(f"the model's answer is not JSON, so it cannot be joined: {answer[:200]!r}") from None
        if isinstance(source, dict):
            return {**source, "SageMakerOutput": output}
        return {"SageMakerInput": source, "SageMakerOutput": output}

    def output_record(self, record: bytes, answer: bytes) -> bytes:
        """The ``.out`` bytes of one record (without the ``AssembleWith`` newline)."""
        if self.join and self.output_filter.is_root and self.in_format == "csv":
            return _body(record) + b"," + answer  # the input row followed by the answer's fields
        value = self._joined(record, answer) if self.join else self._decode(answer, self.out_format)
        return self._encode(self.output_filter.select(value), self.out_format)

    def assemble(self, records: list[bytes], response: bytes, *, uri: str, first: int) -> bytes:
        """The ``.out`` bytes for one response to ``records`` (record ``first`` is the 1-based number of the
        first); raises :class:`DataProcessingError` naming the object and record."""
        try:
            answers = self.answers(response, len(records))
        except ValueError as exc:
            raise DataProcessingError(f"{uri}: records {first}-{first + len(records) - 1}: {exc}",
                                      uri=uri, record=first) from None
        out: list[bytes] = []
        for offset, (record, answer) in enumerate(zip(records, answers, strict=True)):
            try:
                out.append(self.output_record(record, answer))
            except ValueError as exc:
                raise _record_error(uri, first + offset, "OutputFilter", exc) from None
        if self.assemble_line:
            return b"".join(o + b"\n" for o in out)
        return b"\n".join(out) + (b"\n" if response.endswith(b"\n") else b"")


def _record_error(uri: str, number: int, what: str, exc: Exception) -> DataProcessingError:
    return DataProcessingError(f"{uri}: record {number}: {what}: {exc}", uri=uri, record=number)


def iter_processed_payloads(
    stream: BinaryIO, processor: RecordProcessor, *, split_type: str, batch_strategy: str,
    limit: int | None, uri: str, keep_inputs: bool = False,
) -> Iterator[tuple[bytes, int, list[bytes] | None]]:
    """Like :func:`~airflow_bt.records.iter_payloads`, with each record passed through the input
    filter. Yields ``(payload, record_count, input_records)``; ``input_records`` (the records as
    read, for the join and the output filter) is ``None`` when the answers need no splitting,
    unless ``keep_inputs`` (the dead-letter reports rejected records as read).
    The payload limit applies to the records as read and to the filtered payload."""
    keep = processor.needs_answers or keep_inputs
    batch: list[bytes] = []
    originals: list[bytes] = []
    size = 0
    single = batch_strategy == "SingleRecord" or split_type == "None"
    for number, record in enumerate(iter_records(stream, split_type, uri=uri, max_record_bytes=limit), 1):
        try:
            sent = processor.filter_record(record)
        except ValueError as exc:
            raise _record_error(uri, number, "InputFilter", exc) from None
        if limit is not None and len(sent) > limit:
            raise too_large(uri, number, limit, len(sent))
        if batch and (single or (limit is not None and size + len(sent) > limit)):
            yield b"".join(batch), len(batch), (originals if keep else None)
            batch, originals, size = [], [], 0
        batch.append(sent)
        if keep:
            originals.append(record)
        size += len(sent)
    if batch:
        yield b"".join(batch), len(batch), (originals if keep else None)
