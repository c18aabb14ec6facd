"""Run a command as a child process and measure its wall time and the peak memory of its process tree.

Peak RSS is reported the conservative way: the **sum over every process of the tree of that
process's own peak RSS** (``VmHWM`` from ``/proc/<pid>/status``, sampled every ``SAMPLE_S``
until the process is gone; the root process also reports its own at its end: Python
contenders print ``vmhwm_kb``, other commands run under GNU ``time``). Processes that peak at
different times are still added up, so this is an upper bound of the memory the tree held at
any one moment. The largest sum of the processes' current RSS seen in one sample
(``concurrent_peak_mb``) is recorded beside it, and so is the largest sum of their PSS
(``concurrent_pss_mb``: a page shared by n processes, such as the code of a library they all
loaded, counts 1/n in each), which is what the tree really cost the machine. CPU time
(``cpu_s``) is user + system time of the root and its waited-for descendants, from ``os.wait4``.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SAMPLE_S = 0.05


@dataclass
class Measurement:
    command: list[str]
    returncode: int
    wall_s: float  # of the whole process, start-up included
    peak_rss_mb: float  # sum of each process's peak RSS over the tree
    concurrent_peak_mb: float  # largest sum of current RSS in one sample
    concurrent_pss_mb: float  # largest sum of PSS in one sample
    cpu_s: float  # user + system CPU time of the tree
    processes: int  # processes seen in the tree (root included)
    result: dict[str, Any] | None = None  # the contender's BENCH-RESULT line
    stdout: str = ""
    stderr: str = ""
    per_process_mb: dict[str, float] = field(default_factory=dict)


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces and parentheses, so split after the last ')'
        ppid = int(stat[stat.rindex(b")") + 2 :].split(b" ", 2)[1])
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def _tree(root: int) -> list[int]:
    children = _children_map()
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def _pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as fh:
            for line in fh:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _status_kb(pid: int) -> tuple[str, int, int] | None:
    """(name, VmHWM kB, VmRSS kB) of a live process, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/status", "rb") as fh:
            text = fh.read().decode(errors="replace")
    except OSError:
        return None
    name, hwm, rss = "?", 0, 0
    for line in text.splitlines():
        if line.startswith("Name:"):
            name = line.split(None, 1)[1] if len(line.split()) > 1 else "?"
        elif line.startswith("VmHWM:"):
            hwm = int(line.split()[1])
        elif line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    return name, hwm, rss


class _Sampler(threading.Thread):
    def __init__(self, root: int) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.stop = threading.Event()
        self.peaks: dict[int, tuple[str, int]] = {}  # pid -> (name, VmHWM kB)
        self.concurrent_kb = 0
        self.concurrent_pss_kb = 0

    def run(self) -> None:
        while not self.stop.is_set():
            self.sample()
            self.stop.wait(SAMPLE_S)

    def sample(self) -> None:
        total = pss = 0
        for pid in _tree(self.root):
            status = _status_kb(pid)
            if status is None:
                continue
            name, hwm, rss = status
            if hwm == 0 and rss == 0:  # a zombie: its memory is gone, its last sample stands
                continue
            total += rss
            pss += _pss_kb(pid)
            if hwm >= self.peaks.get(pid, ("", 0))[1]:
                self.peaks[pid] = (name, hwm)
        self.concurrent_kb = max(self.concurrent_kb, total)
        self.concurrent_pss_kb = max(self.concurrent_pss_kb, pss)


def own_peak_kb() -> int:
    """This process's peak RSS (``VmHWM``) in kB: a contender reports it as ``vmhwm_kb``."""
    status = _status_kb(os.getpid())
    return status[1] if status else 0


TIME_PREFIX = "BENCH-MAXRSS-KB "


def timed_command(command: Sequence[str]) -> list[str]:
    """``command`` under GNU time, which reports its peak RSS exactly (a C parent adds no peak of its own)."""
    if os.path.exists("/usr/bin/time"):
        return ["/usr/bin/time", "-f", TIME_PREFIX + "%M", *command]
    return list(command)


def report_kb(stderr: str) -> int | None:
    for line in stderr.splitlines():
        if line.startswith(TIME_PREFIX):
            return int(line[len(TIME_PREFIX):])
    return None


def run_measured(command: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: str | Path | None = None,
                 result_prefix: str = "BENCH-RESULT ") -> Measurement:
    """Run ``command`` to completion; raise ``RuntimeError`` with its output if it fails."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(list(command), stdout=out, stderr=err, env=dict(env) if env else None, cwd=cwd)
        sampler = _Sampler(proc.pid)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        sampler.stop.set()
        sampler.join()
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
    result = None
    for line in stdout.splitlines():
        if line.startswith(result_prefix):
            result = json.loads(line[len(result_prefix):])
    peaks = dict(sampler.peaks)
    timed = report_kb(stderr)
    if timed is not None:  # under GNU time: the command's own peak, exact (time itself is not counted)
        name = Path(command[3]).name if len(command) > 3 else "command"
        peaks = {proc.pid: (name, timed)}
    else:
        # The root's own peak: sampled, or reported by the process itself at its end (exact). Not
        # ru_maxrss from wait4: Linux carries the parent's peak into a child over fork + exec, so
        # for a small child it reports this (the measuring) process's size instead.
        root_name, root_hwm = peaks.get(proc.pid, (Path(command[0]).name, 0))
        reported = int((result or {}).get("vmhwm_kb", 0))
        peaks[proc.pid] = (root_name, max(root_hwm, reported))
    total_kb = sum(hwm for _, hwm in peaks.values())
    per_process: dict[str, float] = {}
    for pid, (name, hwm) in sorted(peaks.items()):
        per_process[f"{name}[{pid}]"] = round(hwm / 1024, 1)
    measurement = Measurement(
        command=list(command), returncode=proc.returncode, wall_s=wall,
        peak_rss_mb=total_kb / 1024, concurrent_peak_mb=sampler.concurrent_kb / 1024,
        concurrent_pss_mb=sampler.concurrent_pss_kb / 1024, cpu_s=usage.ru_utime + usage.ru_stime,
        processes=max(1, len(peaks)), result=result, stdout=stdout, stderr=stderr, per_process_mb=per_process,
    )
    if proc.returncode != 0:
        tail = "\n".join((stderr or stdout).splitlines()[-40:])
        raise RuntimeError(f"{' '.join(command)} exited with {proc.returncode}:\n{tail}")
    return measurement
