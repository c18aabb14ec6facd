"""Record checks of the shard step: what makes an input record unfit for Batch Transform.

Batch Transform with ``SplitType=Line`` cuts records at every ``\\n`` and sends them as they
are, so the shard step makes sure every line it passes on is one well-formed record:

- valid UTF-8;
- CSV: as many fields as the header (quoted fields are parsed), and no quoted field that
  spans lines (an embedded newline would reach the model as two half records);
- JSON Lines: one JSON value per line;
- at most ``max_record_bytes`` long with its newline (the transform's payload limit);
- ``\\r\\n`` line endings become ``\\n``; blank lines are skipped (they hold no record): empty
  lines, and whitespace-only ones where whitespace cannot be a record (a one-column CSV's
  field may be spaces, so there only empty lines are blank).

Checking is two-tier so that clean data costs little: :meth:`RecordRules.looks_clean` runs a
few whole-block scans in C (ASCII, quote and ``\\r`` search, comma and brace counts,
newline-free windows, and for JSON Lines one parse of the whole block); only a block it cannot
vouch for goes through :meth:`RecordRules.scan`, which parses line by line and names every bad
record. A block the fast tier vouches for is one the exact tier passes whole, except for what
the mode leaves out below (``tests/unit/test_roundtrip_properties.py`` checks this).
``validation`` sets how much the fast tier vouches for:

- ``standard`` (default): all of the above. It misses one case: within one 4 MB block, a CSV
  row with a field too many and another with one too few balance out in the comma count.
- ``fast``: no comma count (it costs ~0.65 ms per MB without numpy, which would double the
  step's time); CSV field counts, and so blank lines of CSV with two or more columns, are then
  checked only by the publish step, which fails before publishing anything
  (:func:`airflow_bt.steps.publish.publish_attempt`). A one-column CSV has no commas to count
  and a blank line there looks like an empty field to the publish step, so its blank lines are
  searched for here in every mode. With ``quarantine`` the comma count is made anyway: ragged
  rows must be set aside here. JSON Lines are parsed in every mode (the publish step's own parse
  names no line).
- ``strict``: every line is parsed (~1 µs per record).
"""

from __future__ import annotations

import codecs
import csv
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

BOM = codecs.BOM_UTF8
FIX_HINT = ("fix the input upstream, or set `shard.on_bad_record: quarantine` in the DAG config to set bad "
            "records aside under the attempt's _errors/ and score the rest")
VALIDATION_MODES = ("standard", "fast", "strict")
BAD_RECORD_MODES = ("fail", "quarantine")


_scan_json_value = json.JSONDecoder().scan_once  # type: ignore[attr-defined]  # the C scanner: (value, end)
_json_lines_decoder: Any = None  # msgspec's, once looked for (False: not installed)


def csv_fields(line: bytes) -> int:
    """How many fields a CSV line has (quoted fields parsed; the quote-free common case counts commas)."""
    if b'"' in line:
        return len(next(csv.reader([line.decode("utf-8", errors="replace")])))
    return line.count(b",") + 1


@dataclass(frozen=True)
class BadRecord:
    """One input record that cannot be sent to the model, and why."""

    uri: str
    line: int  # 1-based line of the object where the record starts (the header is line 1)
    offset: int  # byte offset of the record in the (decompressed) object
    reason: str
    data: bytes
    hint: str = FIX_HINT

    def message(self) -> str:
        return f"{self.uri} line {self.line} (byte offset {self.offset}): {self.reason}; {self.hint}"

    def as_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"object": self.uri, "line": self.line, "byte_offset": self.offset,
                               "reason": self.reason, "record": self.data.decode("utf-8", errors="replace")}
        try:
            self.data.decode("utf-8")
        except UnicodeDecodeError:
            doc["record_hex"] = self.data.hex()  # the exact bytes, since "record" had to replace some
        return doc


@dataclass
class ScanResult:
    """What :meth:`RecordRules.scan` made of a block: the good records, the bad ones, what it used."""

    good: bytes
    good_records: int
    bad: list[BadRecord] = field(default_factory=list)
    consumed: int = 0  # bytes of the block used; the rest (an open quoted record) is carried over
    lines: int = 0  # lines of the block used (for line numbers)
    blank: int = 0


@dataclass
class RecordRules:
    """The checks for one partition (format, header width, payload limit, mode)."""

    fmt: str
    max_record_bytes: int | None = None
    validation: str = "standard"
    quarantine: bool = False
    width: int = 0  # CSV fields per record (from the header)

    def set_header(self, header: bytes) -> None:
        self.width = csv_fields(header)

    def is_blank(self, line: bytes) -> bool:
        """Whether a line (without its line ending) holds no record: empty, or whitespace only where
        whitespace cannot be a record (in a one-column CSV a field of spaces is a value)."""
        if not line:
            return True
        return not line.strip() and not (self.fmt == "csv" and self.width == 1)

    def _limit_hint(self) -> str:
        return ("raise `transform.max_payload_mb` (the payload limit) or split such records upstream; "
                "or set `shard.on_bad_record: quarantine` to set them aside")

    # -- the fast tier ---------------------------------------------------------------------------------

    def looks_clean(self, buffer: bytearray, end: int, records: int, count: Callable[[int, int, int], int]) -> bool:
        """True when ``buffer[:end]`` (complete lines, ``records`` of them) surely passes every check.

        ``count(start, end, byte)`` counts a byte value in the buffer (vectorised when possible).
        False means "look closer", not "bad".
        """
        if self.validation == "strict":
            return False
        if not buffer.isascii():  # the whole buffer: a stale non-ASCII tail only costs a closer look
            try:
                codecs.utf_8_decode(memoryview(buffer)[:end], "strict", True)
            except UnicodeDecodeError:
                return False
        if buffer.find(b"\r", 0, end) >= 0:
            return False
        if self.max_record_bytes is not None and end > self.max_record_bytes and self._has_long_gap(buffer, end):
            return False
        if self.fmt == "csv":
            if buffer.find(b'"', 0, end) >= 0:
                return False  # quoted fields
            if self.width == 1:
                # Any comma is a field too many, and the publish step cannot tell a blank line from an empty
                # field: look for both in every mode (memchr, and a 2-byte search at ~1 ms per MB).
                return buffer[0] != 0x0A and buffer.find(b",", 0, end) < 0 and buffer.find(b"\n\n", 0, end) < 0
            if self.validation == "fast" and not self.quarantine:
                return True  # field counts (and so blank lines) are left to the publish step
            return count(0, end, 0x2C) == records * (self.width - 1)  # a blank line has no comma either
        # JSON Lines: every line starts with "{" and ends with "}" (objects, the usual records), and the
        # block parses as exactly one JSON value per line
        return (buffer[0] == 0x7B and buffer.count(b"}\n", 0, end) == records
                and buffer.count(b"\n{", 0, end - 1) == records - 1
                and one_json_value_per_line(memoryview(buffer)[:end], records))

    def _has_long_gap(self, buffer: bytearray, end: int) -> bool:
        """Whether some run of bytes without ``\\n`` may be longer than the limit (windows of half of it)."""
        assert self.max_record_bytes is not None
        window = max(1, self.max_record_bytes // 2)
        return any(buffer.find(b"\n", start, min(start + window, end)) < 0 for start in range(0, end, window))

    # -- the exact tier --------------------------------------------------------------------------------

    def scan(self, data: bytes, *, uri: str, first_line: int, offset: int, at_eof: bool) -> ScanResult:
        """Check ``data`` (complete lines) line by line; the good records joined, and the bad ones.

        A CSV line that opens a quoted field without closing it continues on the next lines; in
        quarantine mode that whole multi-line record is one bad record. If such a record is still
        open at the end of ``data`` and more input follows (``not at_eof``), scanning stops before
        it and ``consumed`` says where, so the caller carries it into the next block.
        """
        lines = data.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        good: list[bytes] = []
        result = ScanResult(good=b"", good_records=0)
        pos = 0
        i = 0
        while i < len(lines):
            raw = lines[i]
            start_pos, start_line = pos, first_line + i
            pos += len(raw) + 1
            i += 1
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            if self.is_blank(raw):
                result.blank += 1
                continue
            if self.fmt == "csv" and raw.count(b'"') % 2:
                # an open quoted field: the record goes on over the next line(s)
                parts = [raw]
                while i < len(lines) and sum(p.count(b'"') for p in parts) % 2:
                    parts.append(lines[i].rstrip(b"\r"))
                    pos += len(lines[i]) + 1
                    i += 1
                if sum(p.count(b'"') for p in parts) % 2 and not at_eof:
                    pos, i = start_pos, i - len(parts)  # carry it: it may close in the next block
                    break
                closed = sum(p.count(b'"') for p in parts) % 2 == 0
                reason = (f"a quoted field spans {len(parts)} lines (an embedded newline); Batch Transform "
                          "splits records at every newline, so the model would get pieces of the record"
                          if closed else "a quoted field is never closed (an unbalanced double quote)")
                result.bad.append(BadRecord(uri, start_line, offset + start_pos, reason, b"\n".join(parts)))
                continue
            problem = self._problem(raw)
            if problem is None:
                good.append(raw)
                continue
            reason, hint = problem
            result.bad.append(BadRecord(uri, start_line, offset + start_pos, reason, raw, hint))
        result.consumed = pos
        result.lines = i
        result.good_records = len(good)
        result.good = b"\n".join(good) + b"\n" if good else b""
        return result

    def _problem(self, raw: bytes) -> tuple[str, str] | None:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return (f"invalid UTF-8 at byte {exc.start} of the record ({raw[exc.start:exc.start + 4]!r}); "
                    "records must be UTF-8", FIX_HINT)
        if self.max_record_bytes is not None and len(raw) + 1 > self.max_record_bytes:
            return (f"the record is {len(raw) + 1} bytes with its newline, over the payload limit of "
                    f"{self.max_record_bytes} bytes", self._limit_hint())
        if self.fmt == "csv":
            fields = csv_fields(raw)
            if fields != self.width:
                return f"{fields} field(s), but the header has {self.width}", FIX_HINT
            return None
        try:
            json.loads(text)
        except json.JSONDecodeError as exc:  # its own "line 1 column N" would contradict the object's line
            return f"not valid JSON: {exc.msg} at character {exc.pos + 1} of the record", FIX_HINT
        except ValueError as exc:
            return f"not valid JSON: {exc}", FIX_HINT
        except RecursionError:
            return "too deeply nested for Python's JSON parser (RecursionError)", FIX_HINT
        return None


def one_json_value_per_line(block: memoryview, records: int) -> bool:
    """Whether ``block`` (``records`` complete lines, each starting with ``{`` and ending with ``}``, valid
    UTF-8) holds exactly one JSON value per line. False means "look closer", not "bad".

    The whole block is parsed in one call to msgspec when it is installed (Airflow installs it; it
    parses ~6x faster than the standard library, which is used otherwise). Counting the values is
    enough: a line ends with ``}`` and the next starts with ``{``, and no JSON value goes on from a
    ``}`` to a ``{`` (a raw newline inside a string is invalid JSON), so no value spans two lines,
    each line holds at least one value, and as many values as lines means one per line.
    """
    global _json_lines_decoder
    if _json_lines_decoder is None:
        try:
            import msgspec
        except ImportError:
            _json_lines_decoder = False
        else:  # values are validated and kept as raw bytes, not built as Python objects
            _json_lines_decoder = msgspec.json.Decoder(msgspec.Raw).decode_lines
    try:
        if _json_lines_decoder:
            return len(_json_lines_decoder(block)) == records
        lines = codecs.utf_8_decode(block, "strict", True)[0].split("\n")
        lines.pop()  # after the last newline
        return [end for _, end in map(_scan_json_value, lines, repeat(0))] == list(map(len, lines))
    except (ValueError, StopIteration, RecursionError):  # msgspec's DecodeError is a ValueError
        return False
