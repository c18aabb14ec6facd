"""The shard objects: :class:`_ShardSink` opens them one after another, writing and committing them on
one background I/O thread; each becomes visible only when complete."""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from airflow_bt.faults import failpoint
from airflow_bt.storage.base import Storage
from airflow_bt.storage.uris import join_uri


@dataclass
class _ShardSink:
    """Opens shard objects one after another; each becomes visible only when complete.

    The bookkeeping (sizes, record counts, where to cut) happens in the caller's thread; the
    I/O (opening, writing, committing a shard) runs in order on one background thread, so
    writing and committing (fsync, or an upload) overlap with reading and counting the next
    block. :meth:`write` returns the future of its write: the caller must not change the
    bytes it passed until that future is done.
    """

    store: Storage
    prefix: str
    extension: str
    target_bytes: int
    written: list[dict[str, Any]] = field(default_factory=list)
    size: int = 0
    records: int = 0
    _open: bool = False
    _io: ThreadPoolExecutor | None = None
    _pending: deque[Future[None]] = field(default_factory=deque)
    # touched by the I/O thread only
    _stack: contextlib.ExitStack | None = None
    _out: BinaryIO | None = None

    @property
    def total_records(self) -> int:
        """Records written so far, in every shard."""
        return sum(int(s["records"]) for s in self.written) + self.records

    def room(self) -> int:
        """Bytes left before this shard should be cut at the next record boundary.

        The last shard is no exception: with exact sizes it holds what is left, at most the target;
        should an object have grown since it was listed, the step makes a shard more rather than
        one too big.
        """
        return self.target_bytes - self.size

    def write(self, piece: bytes | memoryview, records: int) -> Future[None]:
        if not self._open:
            self._submit(self._io_open, join_uri(self.prefix, self._key()))
            self._open = True
        self.size += len(piece)
        self.records += records
        return self._submit(self._io_write, piece)

    def cut(self) -> None:
        if not self._open:
            return
        key = self._key()
        self._submit(self._io_commit)
        self.written.append({"key": key, "uri": join_uri(self.prefix, key), "records": self.records,
                             "bytes": self.size})
        self._open = False
        self.size = self.records = 0

    def finish(self) -> None:
        """Cut the last shard and wait until every shard is committed (raises the first failure)."""
        self.cut()
        try:
            while self._pending:
                self._pending.popleft().result()
        finally:
            self._shutdown()

    def abort(self) -> None:
        """Wait for the I/O in flight, then drop the shard being written (nothing of it becomes visible)."""
        if self._io is not None:
            self._io.submit(self._io_abort).result()
        self._shutdown()

    def _key(self) -> str:
        return f"part-{len(self.written):05d}{self.extension}"

    def _submit(self, fn: Callable[..., None], *args: Any) -> Future[None]:
        if self._io is None:
            self._io = ThreadPoolExecutor(1, thread_name_prefix="shard-io")
        future = self._io.submit(fn, *args)
        self._pending.append(future)
        while self._pending and self._pending[0].done():  # a failed write stops the step at once
            self._pending.popleft().result()
        return future

    def _shutdown(self) -> None:
        if self._io is not None:
            self._io.shutdown(wait=True, cancel_futures=True)
            self._io = None
        self._pending.clear()

    def _io_open(self, uri: str) -> None:
        self._stack = contextlib.ExitStack()
        # Shards are scratch: a process kill cannot lose written pages, and a shard cut short by
        # an OS crash fails reconciliation (records vs predictions) before anything is published.
        self._out = self._stack.enter_context(self.store.open_write(uri, durable=False))

    def _io_write(self, piece: bytes | memoryview) -> None:
        if self._out is None:
            raise RuntimeError("the shard is not open (its open failed)")
        self._out.write(piece)

    def _io_commit(self) -> None:
        stack, self._stack, self._out = self._stack, None, None
        if stack is not None:
            stack.close()
            failpoint("shard.after_shard", self.prefix)

    def _io_abort(self) -> None:
        stack, self._stack, self._out = self._stack, None, None
        if stack is not None:
            stack.__exit__(RuntimeError, RuntimeError("shard step failed"), None)
