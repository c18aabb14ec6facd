"""The instance worker processes of a job with ``InstanceCount > 1``: starting, watching and ending them.

:func:`_run_processes` spawns one process per :class:`~airflow_bt.transform.instance.InstanceSpec`
(:func:`~airflow_bt.transform.instance.instance_main`; each loads the model itself) and hands the
events they send over a queue to the engine's ``_Monitor`` (:mod:`airflow_bt.transform.monitor`)
until all are done. A stop is looked at every :data:`QUEUE_POLL_S`; it terminates the workers (an
object cut short gets no ``.out``). The workers die with the engine, even when it is SIGKILLed
(:mod:`airflow_bt.transform.runtime.children`).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue as queue_mod
import sys
import threading
import time
import types
from collections.abc import Iterator
from typing import Any

from airflow_bt.transform.events import Event, InstanceDone, InstanceFailed
from airflow_bt.transform.instance import InstanceSpec, instance_main
from airflow_bt.transform.monitor import _Monitor

QUEUE_POLL_S = 0.25  # how often the engine looks at the stop event while waiting for worker events
TERMINATE_GRACE_S = 5.0  # how long a terminated worker gets to exit before it is killed


@contextlib.contextmanager
def _bare_main_module() -> Iterator[None]:
    """Hide ``__main__`` while starting spawned workers.

    ``spawn`` re-runs the parent's main script in every child (for an Airflow worker that is
    the ``airflow`` or ``celery`` command, which imports all of Airflow). The workers need
    nothing from ``__main__``: their entry point lives in this package.
    """
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        if main is not None:
            sys.modules["__main__"] = main


@contextlib.contextmanager
def _children_allowed() -> Iterator[None]:
    """Let a daemonic process start the instance workers.

    Airflow 2's LocalExecutor and Celery's prefork pool run tasks inside daemonic processes,
    and ``multiprocessing`` refuses to start children there ("daemonic processes are not
    allowed to have children"). The flag guards against orphans; the engine stops its
    workers itself on every exit path (see ``_run_processes``), so it is lifted while starting.
    """
    current = multiprocessing.current_process()
    config = getattr(current, "_config", {})
    daemonic = bool(config.get("daemon"))
    if daemonic:
        config["daemon"] = False
    try:
        yield
    finally:
        if daemonic:
            config["daemon"] = True


def _run_processes(specs: list[InstanceSpec], monitor: _Monitor, stop: threading.Event | None = None) -> None:
    """Run each spec in a spawned worker process until all are done, or ``stop`` is set (then terminate them)."""
    ctx = multiprocessing.get_context("spawn")
    events: Any = ctx.Queue()
    rejected = ctx.Value("q", 0)  # the job's dead-lettered records, counted across the instances
    # The workers die with this process: a parent-death signal tied to this thread (which stays in this
    # function until they are gone), and a pipe whose only writer is this process (EOF: the engine died).
    parent_alive, alive_writer = ctx.Pipe(duplex=False)
    parent_pid = os.getpid()
    procs = {spec.instance: ctx.Process(target=instance_main, args=(spec, events, rejected, parent_pid, parent_alive),
                                        name=f"airflow-bt-instance-{spec.instance}") for spec in specs}
    finished = False
    try:
        with _bare_main_module(), _children_allowed():
            for proc in procs.values():
                proc.start()
        finished = _pump(events, dict(procs), monitor, stop)
    finally:
        _end_workers(list(procs.values()), finished)
        parent_alive.close()
        alive_writer.close()
        events.close()
        events.join_thread()


def _pump(events: Any, active: dict[int, Any], monitor: _Monitor, stop: threading.Event | None) -> bool:
    """Hand the workers' events to ``monitor`` until all are done (``True``) or ``stop`` is set (``False``).

    ``stop`` is looked at after every event and every empty poll (:data:`QUEUE_POLL_S`).
    """
    while active:
        if stop is not None and stop.is_set():
            return False
        try:
            event = events.get(timeout=QUEUE_POLL_S)
        except queue_mod.Empty:
            _reap(events, active, monitor)
            continue
        _deliver(event, active, monitor)
    return True


def _deliver(event: Event, active: dict[int, Any], monitor: _Monitor) -> None:
    monitor.handle(event)
    if isinstance(event, InstanceDone):
        active.pop(event.instance, None)


def _reap(events: Any, active: dict[int, Any], monitor: _Monitor) -> None:
    """Workers that exited without :class:`InstanceDone`: take the events they left, then report them failed."""
    dead = [i for i, proc in active.items() if not proc.is_alive()]
    if not dead:
        return
    with contextlib.suppress(queue_mod.Empty):  # a worker that exited may still have events in the pipe
        while True:
            _deliver(events.get(timeout=0.2), active, monitor)
    for i in dead:
        if i in active:
            code = active.pop(i).exitcode
            monitor.handle(InstanceFailed(i, f"instance {i} exited with code {code} before finishing its objects"))


def _end_workers(procs: list[Any], finished: bool) -> None:
    """Give workers that are done 10 s to exit; terminate the others at once (and kill any that linger)."""
    started = [proc for proc in procs if proc.pid is not None]
    if finished:
        for proc in started:
            proc.join(timeout=10)
    alive = [proc for proc in started if proc.is_alive()]
    for proc in alive:  # on a stop, an error or a kill of the task
        proc.terminate()
    deadline = time.monotonic() + TERMINATE_GRACE_S
    for proc in alive:
        proc.join(timeout=max(0.0, deadline - time.monotonic()))
        if proc.is_alive():
            proc.kill()
            proc.join()
