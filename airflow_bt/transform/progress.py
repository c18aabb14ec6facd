"""A progress display for the local engine's ``progress(objects_done, objects_total, records_done)`` calls.

On a terminal it keeps one status line up to date (``\\r``), and log lines printed through
:meth:`ProgressPrinter.log_handler` clear it first and redraw it after::

     objects 3/10  records 120,000  45,000 rec/s

Anywhere else (a file, a pipe, CI) it writes that line at most every ``every_s`` seconds, and
once more when the last object is done.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO


class ProgressPrinter:
    """Call it as the engine's ``progress`` callback; call :meth:`close` when the job is over."""

    def __init__(self, stream: TextIO | None = None, *, tty: bool | None = None, every_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.every_s = every_s
        self.clock = clock
        self.started = clock()
        self.last_print: float | None = None
        self.shown = ""  # the status line now on screen (terminal only)
        self.state: tuple[int, int, int] | None = None
        self._lock = threading.Lock()

    def text(self, done: int, total: int, records: int) -> str:
        """``objects 3/10  records 120,000  45,000 rec/s``"""
        elapsed = self.clock() - self.started
        rate = records / elapsed if elapsed > 0 else 0.0
        return f"objects {done}/{total}  records {records:,}  {rate:,.0f} rec/s"

    def __call__(self, done: int, total: int, records: int) -> None:
        with self._lock:
            self.state = (done, total, records)
            now = self.clock()
            if self.tty:
                self._draw(self.text(done, total, records))
            elif self.last_print is None or now - self.last_print >= self.every_s or done == total:
                self.stream.write(self.text(done, total, records) + "\n")
                self.stream.flush()
                self.last_print = now

    def _draw(self, line: str) -> None:
        pad = " " * max(0, len(self.shown) - len(line))
        self.stream.write(f"\r {line}{pad}")
        self.stream.flush()
        self.shown = line

    def clear(self) -> None:
        """Erase the status line (terminal only), e.g. before printing something else."""
        if self.tty and self.shown:
            self.stream.write("\r" + " " * (len(self.shown) + 1) + "\r")
            self.stream.flush()

    def redraw(self) -> None:
        """Show the status line again after :meth:`clear`."""
        if self.tty and self.shown:
            self._draw(self.shown)

    def close(self) -> None:
        """End the status line with a newline so what follows starts on its own line."""
        with self._lock:
            if self.tty and self.shown:
                self.stream.write("\n")
                self.stream.flush()
                self.shown = ""

    def log_handler(self, fmt: str = "%(asctime)s %(message)s") -> logging.Handler:
        """A handler writing log records to the same stream without garbling the status line."""
        printer = self

        class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
            def emit(self, record: logging.LogRecord) -> None:
                with printer._lock:
                    printer.clear()
                    super().emit(record)
                    printer.redraw()

        handler = _Handler(self.stream)
        handler.setFormatter(logging.Formatter(fmt))
        return handler
