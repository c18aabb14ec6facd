"""Processes the engine starts die with it, even when it is SIGKILLed.

Two mechanisms, used at the two spots where the engine starts processes:

- **Linux**: ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` in the child, so the kernel kills it when its parent
  goes. The kernel means the parent *thread*: :func:`start_child` forks a serve command from a thread
  of its own that lives exactly as long as the child (it waits for it), never from a short-lived
  caller thread. After ``prctl`` the child compares ``getppid()`` with the pid that started it: if
  the parent died before ``prctl`` ran, the child kills itself instead of living on.
- **Everywhere**: an instance worker process (``multiprocessing``, which has no pre-exec hook) calls
  :func:`die_with_parent` first thing, and :func:`watch_parent_pipe` watches a pipe whose only
  writer is the engine: end-of-file means the engine is gone, and the worker kills the serve
  commands it started (:func:`kill_started_children`) and exits.

A serve command started in the engine's own process (``InstanceCount=1``) relies on the first
mechanism; on systems without ``PR_SET_PDEATHSIG`` it can outlive a SIGKILLed engine.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import queue
import signal
import subprocess
import sys
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Any

PR_SET_PDEATHSIG = 1
_prctl: Callable[..., int] | None = None
_started: weakref.WeakSet[subprocess.Popen[Any]] = weakref.WeakSet()
_started_lock = threading.Lock()


def _load_prctl() -> Callable[..., int] | None:
    """libc's ``prctl``, loaded once (never in a freshly forked child: no ``dlopen`` after fork)."""
    global _prctl
    if _prctl is None and sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            _prctl = libc.prctl
        except (OSError, AttributeError):
            _prctl = None
    return _prctl


def has_parent_death_signal() -> bool:
    """Whether this system can tie a child's life to its parent's (Linux ``PR_SET_PDEATHSIG``)."""
    return _load_prctl() is not None


def die_with_parent(parent_pid: int, sig: int = signal.SIGKILL) -> None:
    """In a child process: get ``sig`` when the parent (thread) that started it ends; if the parent
    (``parent_pid``) is already gone, die now."""
    prctl = _load_prctl()
    if prctl is not None:
        prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before prctl ran (or we were re-parented)
        os.kill(os.getpid(), sig)


def _preexec(parent_pid: int) -> Callable[[], None]:
    prctl = _load_prctl()  # resolved before the fork

    def run_in_child() -> None:
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent_pid:
            os.kill(os.getpid(), signal.SIGKILL)

    return run_in_child


def start_child(argv: Sequence[str], **popen_kwargs: Any) -> subprocess.Popen[Any]:
    """``subprocess.Popen(argv, **popen_kwargs)`` for a process that must die with this one.

    The fork happens on a dedicated daemon thread that then waits for the child, so the thread
    the kernel watches for ``PR_SET_PDEATHSIG`` lives as long as the child does. ``OSError`` from
    ``Popen`` (no such command) is raised here, in the caller. Callers may ``poll()``/``wait()``
    the returned process as usual.
    """
    parent_pid = os.getpid()
    handoff: queue.Queue[subprocess.Popen[Any] | BaseException] = queue.Queue(maxsize=1)

    def keeper() -> None:
        try:
            proc = subprocess.Popen(list(argv), preexec_fn=_preexec(parent_pid), **popen_kwargs)
        except BaseException as exc:  # handed to the caller
            handoff.put(exc)
            return
        with _started_lock:
            _started.add(proc)
        handoff.put(proc)
        proc.wait()  # this thread is the child's "parent thread": it ends when the child does

    threading.Thread(target=keeper, name=f"child-{os.path.basename(str(argv[0]))}", daemon=True).start()
    started = handoff.get()
    if isinstance(started, BaseException):
        raise started
    return started


def kill_started_children(sig: int = signal.SIGKILL) -> None:
    """Kill every still-running process :func:`start_child` started here (and their process groups)."""
    with _started_lock:
        procs = list(_started)
    for proc in procs:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(proc.pid, sig)


def watch_parent_pipe(reader: Any) -> threading.Thread:
    """Start a daemon thread that ends this process when ``reader`` (a ``multiprocessing`` connection
    whose writer only the parent holds) reaches end-of-file: the parent has died."""

    def watch() -> None:
        with contextlib.suppress(EOFError, OSError):
            while True:
                reader.recv()  # the parent never sends: this returns only at EOF (raises EOFError)
        kill_started_children()
        os._exit(1)

    thread = threading.Thread(target=watch, name="watch-parent", daemon=True)
    thread.start()
    return thread
