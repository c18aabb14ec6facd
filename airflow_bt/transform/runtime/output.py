"""Where a model process's output lines go: the job's log, so a user can read what the model printed.

A model the engine starts (a serve command, an isolated handler server) writes its stdout and stderr into a
pipe; :class:`~airflow_bt.transform.runtime.serve.ServeCommandRuntime` pumps it into its ``serve.log`` (the
tail quoted when the model fails to start) and hands every line to :func:`emit`. There it goes to the
listeners this process registered (the local backend: the job's log and its failure tail), or, where there
are none, to stderr as ``[model] <line>`` — in ``local-sagemaker``'s job worker, whose stderr is the job's
CloudWatch Logs stream — prefixed ``[instance <n>] `` in an instance worker process, so the service writes it
to that instance's stream.
"""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Callable

Listener = Callable[[str], None]
INSTANCE_TAG = re.compile(r"^\[instance (\d+)\] ")

_listeners: list[Listener] = []
_lock = threading.Lock()
_tag = ""


def set_instance(instance: int) -> None:
    """This process is instance worker ``instance``: its lines on stderr are tagged with it."""
    global _tag
    _tag = f"[instance {instance}] "


def add_listener(listener: Listener) -> None:
    with _lock:
        _listeners.append(listener)


def remove_listener(listener: Listener) -> None:
    with _lock:
        if listener in _listeners:
            _listeners.remove(listener)


def emit(line: str) -> None:
    """One line the model wrote."""
    with _lock:
        listeners = list(_listeners)
    for listener in listeners:
        listener(line)
    if not listeners:
        sys.stderr.write(f"{_tag}[model] {line}\n")
        sys.stderr.flush()


def instance_of(line: str) -> tuple[int, str]:
    """The instance a worker's stderr line belongs to (0 when untagged), and the line without its tag."""
    match = INSTANCE_TAG.match(line)
    return (int(match.group(1)), line[match.end():]) if match else (0, line)
