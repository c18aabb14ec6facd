"""Bad records of the shard step: the first fails it, or (quarantine) each is appended to the errors object."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from typing import BinaryIO

from airflow_bt.steps.input_checks import BadRecord
from airflow_bt.steps.shard.common import ShardInputError
from airflow_bt.storage.base import Storage


@dataclass
class _BadRecords:
    """Bad records: the first one fails the step, or (quarantine) each is appended to the errors object."""

    store: Storage
    uri: str
    quarantine: bool
    limit: int
    count: int = 0
    first: str = ""
    _stack: contextlib.ExitStack | None = None
    _out: BinaryIO | None = None

    def add(self, bad: list[BadRecord]) -> None:
        if not bad:
            return
        if not self.quarantine:
            raise ShardInputError(bad[0].message())
        if self.count + len(bad) > self.limit:
            raise ShardInputError(
                f"more than {self.limit} bad records (shard.max_bad_records): the input looks wrong as a whole, "
                f"not record by record; the latest: {bad[-1].message()}")
        if self._out is None:
            self._stack = contextlib.ExitStack()
            self._out = self._stack.enter_context(self.store.open_write(self.uri))
            self.first = bad[0].message()
        self._out.write(b"".join(json.dumps(b.as_json()).encode() + b"\n" for b in bad))
        self.count += len(bad)

    def finish(self) -> None:
        stack, self._stack, self._out = self._stack, None, None
        if stack is not None:
            stack.close()

    def abort(self) -> None:
        stack, self._stack, self._out = self._stack, None, None
        if stack is not None:
            stack.__exit__(RuntimeError, RuntimeError("shard step failed"), None)
