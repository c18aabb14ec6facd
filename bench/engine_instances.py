"""InstanceCount scaling of the local engine on a CPU-bound model.

    python bench/engine_instances.py [--repeats 3] [--objects 4] [--rows 4000] [--work 3000]
                                     [--wait-quiet 60] [--json] [--check]

Makes, in a temporary folder, a Python-handler model whose every prediction is a pure-Python
loop (``--work`` iterations per row: CPU-bound, holds the GIL) and ``--objects`` CSV input
objects of ``--rows`` rows each, then runs the same transform job with ``InstanceCount=1``
and ``InstanceCount=2`` alternately, ``--repeats`` times each, and prints the wall times,
their medians, and::

    instances_2_vs_1_time: 0.xx

(the median time with two instances over the median with one). Instances are separate
worker processes, so on a machine with two free cores the ratio should be near 0.5 plus
the cost of starting the workers; the target is at most 0.65. ``--check`` exits 1 above
that. Both runs must write identical ``.out`` objects (checked every time).

Other work on the machine skews the ratio towards 1: the script measures how many cores two
CPU-bound processes really get (``free cores``, 2.00 when two are idle) before and after,
and before each pair of runs waits (``--wait-quiet`` seconds in all) for two free cores.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from airflow_bt.transform.local_engine import run_transform_job

TARGET = 0.65
QUIET_CORES = 1.85
HANDLER = '''\
"""CPU-bound benchmark model: each row costs WORK iterations of a pure-Python loop."""
import os

WORK = int(os.environ.get("BENCH_WORK", "3000"))


def model_fn(model_dir):
    return WORK


def transform_fn(work, data, content_type, accept):
    out = []
    for line in data.decode().splitlines():
        x = sum(int(v) for v in line.split(","))
        for i in range(work):
            x = (x * 31 + i) & 0xFFFFFFFF
        out.append(str(x))
    return "\\n".join(out) + "\\n"
'''


def make_inputs(root: Path, objects: int, rows: int, work: int) -> tuple[str, dict[str, Any]]:
    """Write the model and the input objects; return the input URI and the CreateModel request."""
    (root / "model" / "code").mkdir(parents=True)
    (root / "model" / "code" / "inference.py").write_text(HANDLER)
    with tarfile.open(root / "model.tar.gz", "w:gz") as tar:
        tar.add(root / "model", arcname=".")
    for i in range(objects):
        path = root / "in" / f"part-{i:05d}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{i},{j},{j % 7}\n" for j in range(rows)))
    model = {"ModelName": "bench-cpu", "PrimaryContainer": {
        "Image": "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3",
        "ModelDataUrl": (root / "model.tar.gz").as_uri(), "Environment": {"BENCH_WORK": str(work)}}}
    return (root / "in").as_uri() + "/", model


def _spin(n: int) -> float:
    started = time.perf_counter()
    x = 0
    for i in range(n):
        x = (x * 31 + i) & 0xFFFFFFFF
    return time.perf_counter() - started


def free_cores(n: int = 3_000_000) -> float:
    """How many cores two CPU-bound processes actually get right now (2.0 on an idle 2-core machine).

    Runs the same pure-Python loop once alone and twice at the same time in two processes.
    """
    import multiprocessing

    alone = _spin(n)
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        pool.map(_spin, [1000, 1000])  # start both workers first
        started = time.perf_counter()
        pool.map(_spin, [n, n])
        together = time.perf_counter() - started
    return 2 * alone / together


def wait_until_quiet(budget_s: float, wanted: float = QUIET_CORES) -> float:
    """Wait until two CPU-bound processes get ``wanted`` cores, or ``budget_s`` passes; the seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < budget_s and free_cores(1_000_000) < wanted:
        time.sleep(2)  # other work on the machine: nothing to wait on but the clock
    return time.monotonic() - started


def run_once(root: Path, inp: str, model: dict[str, Any], instances: int, run: int) -> tuple[float, dict[str, bytes]]:
    """Wall time of one job and its outputs."""
    out = root / f"out-{instances}-{run}"
    request = {
        "TransformJobName": f"bench-{instances}-{run}", "ModelName": "bench-cpu",
        "TransformInput": {"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": inp}},
                           "ContentType": "text/csv", "SplitType": "Line"},
        "TransformOutput": {"S3OutputPath": out.as_uri(), "Accept": "text/csv", "AssembleWith": "Line"},
        "TransformResources": {"InstanceType": "ml.m5.large", "InstanceCount": instances},
        "BatchStrategy": "MultiRecord", "MaxPayloadInMB": 1,
    }
    started = time.perf_counter()
    result = run_transform_job(request, model)
    seconds = time.perf_counter() - started
    if result["TransformJobStatus"] != "Completed":
        raise SystemExit(f"benchmark job failed: {result.get('FailureReason')}")
    return seconds, {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per instance count (default 3)")
    parser.add_argument("--objects", type=int, default=4, help="input objects (default 4)")
    parser.add_argument("--rows", type=int, default=4000, help="rows per object (default 4000)")
    parser.add_argument("--work", type=int, default=3000, help="loop iterations per row (default 3000)")
    parser.add_argument("--wait-quiet", type=float, default=60.0, metavar="SECONDS",
                        help="before each pair of runs, wait (at most this long in all) until two cores are "
                             "free (default 60; 0: never wait)")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    parser.add_argument("--check", action="store_true", help=f"exit 1 if the ratio is above {TARGET}")
    args = parser.parse_args(argv)

    times: dict[int, list[float]] = {1: [], 2: []}
    cores = [free_cores()]
    print(f"free cores before: {cores[0]:.2f} (two CPU-bound processes side by side; 2.00 = two idle cores)")
    with tempfile.TemporaryDirectory(prefix="airflow-bt-bench-instances-") as tmp:
        root = Path(tmp)
        inp, model = make_inputs(root, args.objects, args.rows, args.work)
        reference: dict[str, bytes] | None = None
        budget = args.wait_quiet
        for run in range(args.repeats):
            budget -= wait_until_quiet(budget)
            for instances in (1, 2):  # side by side, so a busy spell on the machine hits both
                seconds, outputs = run_once(root, inp, model, instances, run)
                if reference is None:
                    reference = outputs
                elif outputs != reference:
                    raise SystemExit(f"InstanceCount={instances} wrote different outputs")
                times[instances].append(seconds)
                print(f"run {run + 1}/{args.repeats} instances={instances}: {seconds:.2f} s", flush=True)

    cores.append(free_cores())
    print(f"free cores after: {cores[1]:.2f}")
    one, two = statistics.median(times[1]), statistics.median(times[2])
    ratio = two / one
    rows = args.objects * args.rows
    print(f"instances_1_median_seconds: {one:.2f}  ({rows / one:,.0f} rows/s)")
    print(f"instances_2_median_seconds: {two:.2f}  ({rows / two:,.0f} rows/s)")
    print(f"instances_2_vs_1_time: {ratio:.2f}")
    if args.json:
        print(json.dumps({"instances_1_seconds": times[1], "instances_2_seconds": times[2],
                          "instances_2_vs_1_time": round(ratio, 3), "rows": rows, "work": args.work,
                          "free_cores": [round(c, 2) for c in cores]}))
    if min(cores) < QUIET_CORES:
        print(f"note: other work held the CPUs (free cores {cores[0]:.2f} before, {cores[1]:.2f} after); "
              "the ratio is then closer to 1 than the engine's own", file=sys.stderr)
    if args.check and ratio > TARGET:
        print(f"instances_2_vs_1_time {ratio:.2f} is above the target {TARGET}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
