"""``make bench``: the pipeline against the naive script, the floor, and GNU split; Airflow's overhead.

    python -m bench.run [--rows 2000000] [--repeats 3] [--no-airflow] [--no-memory] [--only-memory]
                        [--no-parquet | --only-parquet]

Generates the demo data once per row count (cached in bench/data/, with its typed Parquet copy),
then runs every contender ``--repeats`` times, each run in its own process, the CSV path and the
Parquet path side by side in one round-robin (see bench/README.md for what each one is),
prints median wall time, rows/s and peak RSS, the ratios and the targets, and writes
bench/results/latest.json and bench/results/latest.png.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import (
    BENCH,
    DATA,
    DS,
    MODEL,
    REPO,
    RESULTS,
    Dataset,
    dataset,
    file_uri,
    load_average,
    machine,
    model_dir,
    parquet_dataset,
    pipeline_settings,
    scratch_dir,
)
from bench.measure import Measurement, run_measured, timed_command

CONTENDERS = ("pipeline", "naive", "floor", "shard", "split")
PARQUET_CONTENDERS = ("pipeline_parquet", "naive_parquet", "floor_parquet")  # Parquet in and out
VARIANTS = {  # measured beside the contenders, for the report; not in the ratios
    "pipeline_2x1": "the pipeline with InstanceCount=2 and MaxConcurrentTransforms=1 (two engine processes, "
                    "one request each) instead of the DAG's one process with two requests in flight",
    "shard_numpy_loaded": "the shard step in a process that has numpy loaded already: it then counts records "
                          "with numpy (a fresh process does so only for partitions of 512 MiB or more)",
    "shard_standard": "the shard step with `shard.validation: standard` (the default; the churn DAG uses fast): "
                      "CSV field counts checked per block by counting commas",
}
SHARD_REPEATS = 5
MEMORY_ROWS = (1_000_000, 4_000_000)
TARGETS = {  # ratio: (comparison, bound)
    "pipeline_vs_naive_throughput": (">=", 1.5),
    "pipeline_vs_naive_rss": ("<=", 0.5),
    "shard_vs_split_throughput": (">=", 0.5),
    "pipeline_vs_floor_time": ("<=", 2.0),
    "pipeline_rss_4m_vs_1m": ("<=", 1.10),
    "parquet_pipeline_vs_naive_throughput": (">=", 1.5),
    "parquet_pipeline_vs_naive_rss": ("<=", 0.5),
    "parquet_pipeline_rss_4m_vs_1m": ("<=", 1.10),
    "publish_checks_vs_plain_time": ("<=", 1.15),
    "parquet_publish_checks_vs_plain_time": ("<=", 1.15),
    "publish_table_vs_plain_time": ("<=", 1.3),
    "parquet_publish_table_vs_plain_time": ("<=", 1.3),
}
#: Extra publishes per pipeline run, without statistics and with the churn DAG's prediction checks, alternately.
PUBLISH_ROUNDS = 2
#: Then publishes (typed Parquet, with the churn DAG's checks) without and with the Iceberg table commit, alternately,
#: after one that creates the table (timed apart, not in the medians).
TABLE_ROUNDS = 2
SCALING_RATIOS = ("pipeline_rss_4m_vs_1m", "parquet_pipeline_rss_4m_vs_1m")  # in results["memory_scaling"]
RSS_METHOD = ("sum over the process tree of each process's own peak RSS (VmHWM sampled every 50 ms, and "
              "ru_maxrss from wait4): an upper bound of the tree's memory at any one moment")


def _python_contender(name: str, rows: int, run: int, *extra: str) -> Measurement:
    out = scratch_dir(f"{name}-{run}")
    try:
        return run_measured([sys.executable, "-m", "bench.contenders", name, "--rows", str(rows), "--out", str(out),
                             *extra], cwd=REPO)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def _split(data: Dataset, shards: int, run: int) -> Measurement:
    out = scratch_dir(f"split-{run}")
    try:
        m = run_measured(timed_command(["split", "-n", f"l/{shards}", "--additional-suffix=.csv",
                                        str(data.concat_file), str(out / "part-")]))
        m.result = {"wall_s": m.wall_s, "rows": data.rows, "shards": shards}
        return m
    finally:
        shutil.rmtree(out, ignore_errors=True)


def _summarise(rows: int, runs: list[Measurement]) -> dict[str, Any]:
    """Median wall time (the contender's own, start-up excluded), rows/s of it, and the largest peak RSS."""
    walls = [m.result["wall_s"] if m.result else m.wall_s for m in runs]
    wall = statistics.median(walls)
    summary: dict[str, Any] = {
        "wall_s": round(wall, 3),
        "rows_per_s": round(rows / wall),
        "peak_rss_mb": round(max(m.peak_rss_mb for m in runs), 1),
        "concurrent_peak_rss_mb": round(max(m.concurrent_peak_mb for m in runs), 1),
        "concurrent_peak_pss_mb": round(max(m.concurrent_pss_mb for m in runs), 1),
        "cpu_s": round(statistics.median(m.cpu_s for m in runs), 3),
        "runs_wall_s": [round(w, 3) for w in walls],
        "runs_peak_rss_mb": [round(m.peak_rss_mb, 1) for m in runs],
        "largest_process_rss_mb": round(max(max(m.per_process_mb.values(), default=0.0) for m in runs), 1),
        "processes": max(m.processes for m in runs),
        "process_wall_s": round(statistics.median(m.wall_s for m in runs), 3),
    }
    phases: list[dict[str, float]] = [m.result["phases"] for m in runs if m.result and m.result.get("phases")]
    if phases:
        summary["phases_s"] = {k: round(statistics.median(p[k] for p in phases), 3) for k in phases[0]}
    for key in ("publish_plain_s", "publish_checked_s",  # every run's extra publishes (--publish-rounds)
                "publish_table_plain_s", "publish_table_s", "table_commit_s",  # and --table-rounds
                "publish_table_create_s", "table_create_commit_s"):
        values = [v for m in runs if m.result for v in _as_list(m.result.get(key, []))]
        if values:
            summary[key] = [round(v, 3) for v in values]
    last = runs[-1]
    summary["per_process_peak_mb"] = last.per_process_mb
    if last.result:
        summary.update({k: v for k, v in last.result.items()
                        if k not in ("wall_s", "phases", "output", "rows", "vmhwm_kb") and k not in summary})
    return summary


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _progress(label: str, m: Measurement) -> None:
    wall = m.result["wall_s"] if m.result else m.wall_s
    phases = (m.result or {}).get("phases") or {}
    detail = "  (" + ", ".join(f"{k} {v:.2f}" for k, v in phases.items()) + ")" if phases else ""
    print(f"  {label:<22} {wall:7.2f} s  cpu {m.cpu_s:6.2f} s  peak RSS {m.peak_rss_mb:5.0f} MB "
          f"(PSS {m.concurrent_pss_mb:4.0f}){detail}", flush=True)


def _round_robin(plan: dict[str, Any], repeats: int) -> dict[str, list[Measurement]]:
    """Run every contender of ``plan`` once per round, ``repeats`` rounds: a change in the machine's
    load (it is shared) then falls on all of them rather than on whichever ran at that moment."""
    runs: dict[str, list[Measurement]] = {name: [] for name in plan}
    for run in range(repeats):
        for name, once in plan.items():
            m = once(run)
            _progress(f"{name} {run + 1}/{repeats}", m)
            runs[name].append(m)
    return runs


def _airflow_run(data: Dataset) -> dict[str, Any]:
    """One ``airflow dags test`` of the churn DAG on the same data, with a throw-away home (SQLite)."""
    home = scratch_dir("airflow-home")
    root = scratch_dir("airflow-root")
    (root / "input").symlink_to(data.root / "input", target_is_directory=True)
    (root / "models" / MODEL).mkdir(parents=True)
    (root / "models" / MODEL / "model.tar.gz").symlink_to(model_dir() / "model.tar.gz")
    env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW_BT_ROOT": file_uri(root)}
    airflow = str(Path(sys.executable).parent / "airflow")
    for step in (["db", "migrate"], ["dags", "reserialize"]):  # not timed
        done = subprocess.run([airflow, *step], env=env, capture_output=True, text=True, cwd=REPO)
        if done.returncode != 0:
            raise RuntimeError(f"airflow {' '.join(step)} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    m = run_measured([airflow, "dags", "test", "churn_nightly_scoring", DS], env=env, cwd=REPO)
    log = DATA / "airflow-dags-test.log"
    log.write_text(m.stdout + m.stderr)
    latest = json.loads((root / "output" / MODEL / f"dt={DS}" / "_LATEST.json").read_text())
    if latest.get("rows") != data.rows:
        raise RuntimeError(f"airflow dags test published {latest.get('rows')} rows, expected {data.rows}")
    tasks = _task_durations(home / "airflow.db")
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(home, ignore_errors=True)
    return {"wall_s": round(m.wall_s, 3), "peak_rss_mb": round(m.peak_rss_mb, 1), "tasks_s": tasks,
            "log": str(log.relative_to(REPO))}


def _task_durations(db: Path) -> dict[str, float]:
    try:
        with sqlite3.connect(db) as conn:
            rows = conn.execute("SELECT task_id, duration FROM task_instance").fetchall()
    except sqlite3.Error:
        return {}
    return {task: round(float(seconds), 3) for task, seconds in rows if seconds is not None}


def _ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else float("inf")


def _met(name: str, value: float) -> bool:
    op, bound = TARGETS[name]
    return value >= bound if op == ">=" else value <= bound


def memory_scaling(repeats: int, *, csv: bool = True, parquet: bool = True) -> dict[str, Any]:
    """The pipelines' peak RSS at 1 and 4 million rows: memory must not grow with the input.

    The CSV pipeline's figures keep their keys (``peak_rss_mb_low``, ...); the Parquet one's are
    prefixed ``parquet_``. Both go round-robin in one loop."""
    low, high = MEMORY_ROWS
    paths = [("pipeline", "", "CSV")] if csv else []
    paths += [("pipeline_parquet", "parquet_", "Parquet")] if parquet else []
    print(f"\n== memory scaling: the {' and '.join(what for *_, what in paths)} pipeline at {low:,} and {high:,} rows",
          flush=True)
    for rows in MEMORY_ROWS:
        parquet_dataset(rows) if parquet else dataset(rows)
    plan = {f"{name} {rows // 1_000_000}M": (lambda run, name=name, rows=rows: _python_contender(name, rows, run))
            for name, *_ in paths for rows in MEMORY_ROWS}
    runs = _round_robin(plan, repeats)
    out: dict[str, Any] = {"rows_low": low, "rows_high": high}
    for name, prefix, _what in paths:
        peaks = {rows: runs[f"{name} {rows // 1_000_000}M"] for rows in MEMORY_ROWS}
        peak_low = max(m.peak_rss_mb for m in peaks[low])
        peak_high = max(m.peak_rss_mb for m in peaks[high])
        ratio = _ratio(peak_high, peak_low)
        key = f"{prefix}pipeline_rss_4m_vs_1m"
        print(f"{key}: {ratio:.2f}  ({peak_high:.0f} MB at {high:,} rows / {peak_low:.0f} MB at "
              f"{low:,} rows; target <= {TARGETS[key][1]:.2f}: {'met' if _met(key, ratio) else 'NOT met'})",
              flush=True)
        out.update({
            f"{prefix}peak_rss_mb_low": round(peak_low, 1), f"{prefix}peak_rss_mb_high": round(peak_high, 1),
            f"{prefix}wall_s_low": round(statistics.median(m.result["wall_s"] for m in peaks[low] if m.result), 3),
            f"{prefix}wall_s_high": round(statistics.median(m.result["wall_s"] for m in peaks[high] if m.result), 3),
            key: ratio,
        })
    return out


def warm_bytecode() -> None:
    """Compile the environment's and the repo's modules to ``.pyc`` (a quick no-op once they are).

    Without it, a process started with ``PYTHONDONTWRITEBYTECODE=1`` (or in a venv that ``uv``
    made without ``--compile-bytecode``) compiles pandas, scikit-learn and SciPy from source at
    every start, ~3 s per process, and every contender would be measured on that instead.
    """
    import sysconfig

    paths = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    paths += [str(REPO / name) for name in ("airflow_bt", "bench", "dags")]
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "compileall", "-q", "-j", "0", *paths], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, check=False)
    seconds = time.perf_counter() - started
    if seconds > 10:
        print(f"compiled the environment's modules to bytecode in {seconds:.0f} s (once)", flush=True)


def engine_instances(repeats: int) -> dict[str, Any]:
    """InstanceCount 2 vs 1 on a GIL-bound model (bench/engine_instances.py, run as it is)."""
    print("\n== local engine: InstanceCount=2 vs 1 on a GIL-bound model (bench/engine_instances.py)", flush=True)
    done = subprocess.run([sys.executable, str(BENCH / "engine_instances.py"), "--repeats", str(repeats), "--json"],
                          capture_output=True, text=True, cwd=REPO, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"bench/engine_instances.py failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    figures: dict[str, Any] = {}
    for line in done.stdout.splitlines():
        if line.startswith("{"):
            figures = json.loads(line)
        else:
            print("  " + line, flush=True)
    return figures


def _shard_count(data: Dataset) -> int:
    """How many shards the churn DAG's settings make of this partition (split -n l/K gets the same K)."""
    settings = pipeline_settings()
    count = math.ceil(data.bytes / (settings["target_shard_mb"] * 1024 * 1024))
    return max(1, min(max(settings["instance_count"], count), settings["max_shards"]))


def _publish_rounds() -> tuple[str, ...]:
    """The pipelines' extra publishes: without/with checks, then without/with the table commit."""
    return ("--publish-rounds", str(PUBLISH_ROUNDS), "--table-rounds", str(TABLE_ROUNDS))


def run_all(rows: int, repeats: int, *, with_airflow: bool, with_variants: bool = True, csv: bool = True,
            parquet: bool = True) -> dict[str, Any]:
    """The contenders at ``rows`` rows: the CSV path (``csv``: pipeline, naive, floor, then shard vs
    split, the variants and Airflow) and the Parquet path (``parquet``), the pipelines, naive scripts
    and floors of both in one round-robin."""
    data = parquet_dataset(rows) if parquet else dataset(rows)
    model_dir()
    load_before = load_average()
    size = f"{data.bytes / 1e6:.0f} MB of CSV" if csv else ""
    if parquet:
        size += (", " if size else "") + f"{data.parquet_bytes / 1e6:.0f} MB of Parquet"
    print(f"\n== {rows:,} rows ({size} in {len(data.files)} files), {repeats} run(s) each; "
          f"load average {load_before}", flush=True)
    shards = _shard_count(data)
    plan: dict[str, Any] = {}
    if csv:
        plan.update({
            "pipeline": lambda run: _python_contender("pipeline", rows, run, *_publish_rounds()),
            "naive": lambda run: _python_contender("naive", rows, run),
            "floor": lambda run: _python_contender("floor", rows, run),
        })
    if parquet:
        plan.update({name: (lambda run, name=name: _python_contender(
            name, rows, run, *(_publish_rounds() if name == "pipeline_parquet" else ())))
            for name in PARQUET_CONTENDERS})
    measured = _round_robin(plan, repeats)
    if csv and with_variants:
        measured.update(_round_robin({
            "pipeline_2x1": lambda run: _python_contender("pipeline", rows, run, "--instances", "2",
                                                          "--concurrency", "1"),
        }, repeats))
    if csv:
        # sharding takes a fraction of a second: more rounds for the same confidence
        measured.update(_round_robin({
            "shard": lambda run: _python_contender("shard", rows, run, "--shards", str(shards)),
            "split": lambda run: _split(data, shards, run),
            **({"shard_numpy_loaded": lambda run: _python_contender("shard", rows, run, "--shards", str(shards),
                                                                    "--numpy-loaded")} if with_variants else {}),
            **({"shard_standard": lambda run: _python_contender("shard", rows, run, "--shards", str(shards),
                                                                "--validation", "standard")} if with_variants else {}),
        }, max(repeats, SHARD_REPEATS)))
    results: dict[str, Any] = {
        "rows": rows,
        "repeats": repeats,
        "measured_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "input_mb": round(data.bytes / 1e6, 1),
        "rss_method": RSS_METHOD,
    }
    if parquet:
        results["input_parquet_mb"] = round(data.parquet_bytes / 1e6, 1)
    for name in (CONTENDERS if csv else ()) + (PARQUET_CONTENDERS if parquet else ()):
        results[name] = _summarise(rows, measured[name])
    variants = {name: _summarise(rows, runs) for name, runs in measured.items()
                if name not in CONTENDERS + PARQUET_CONTENDERS}
    if variants:
        for name, text in VARIANTS.items():
            if name in variants:
                variants[name]["what"] = text
        results["variants"] = variants
    if csv and with_airflow:
        print("  airflow dags test (once; db migrate not timed) ...", flush=True)
        airflow = _airflow_run(data)
        airflow["overhead_s"] = round(airflow["wall_s"] - results["pipeline"]["wall_s"], 3)
        results["airflow"] = airflow
        print(f"  {'airflow':<12} {airflow['wall_s']:8.2f} s  peak RSS {airflow['peak_rss_mb']:7.0f} MB  "
              f"(tasks: {', '.join(f'{k} {v:.2f}' for k, v in airflow['tasks_s'].items())})", flush=True)
    results["load_average"] = {"before": load_before, "after": load_average()}
    results["ratios"] = _ratios(results, csv=csv, parquet=parquet)
    for name in ("pipeline", "pipeline_parquet"):
        if results.get(name, {}).get("table_skipped"):
            print(f"  {name}: the publish with the Iceberg table commit was not measured: "
                  f"{results[name]['table_skipped']}", flush=True)
    return results


def _ratios(results: dict[str, Any], *, csv: bool, parquet: bool) -> dict[str, float]:
    """The ratios the targets are set on, from the summarised contenders."""
    ratios: dict[str, float] = {}
    if csv:
        p, n, f, s, g = (results[k] for k in CONTENDERS)
        ratios.update({
            "pipeline_vs_naive_throughput": _ratio(p["rows_per_s"], n["rows_per_s"]),
            "pipeline_vs_naive_rss": _ratio(p["peak_rss_mb"], n["peak_rss_mb"]),
            "pipeline_vs_floor_time": _ratio(p["wall_s"], f["wall_s"]),
            "shard_vs_split_throughput": _ratio(s["rows_per_s"], g["rows_per_s"]),
        })
    if parquet:
        p, n = results["pipeline_parquet"], results["naive_parquet"]
        ratios.update({
            "parquet_pipeline_vs_naive_throughput": _ratio(p["rows_per_s"], n["rows_per_s"]),
            "parquet_pipeline_vs_naive_rss": _ratio(p["peak_rss_mb"], n["peak_rss_mb"]),
        })
    for prefix, name in (("", "pipeline"), ("parquet_", "pipeline_parquet")):
        r = results.get(name, {})
        if r.get("publish_plain_s") and r.get("publish_checked_s"):
            ratios[f"{prefix}publish_checks_vs_plain_time"] = _ratio(statistics.median(r["publish_checked_s"]),
                                                                     statistics.median(r["publish_plain_s"]))
        if r.get("publish_table_plain_s") and r.get("publish_table_s"):
            ratios[f"{prefix}publish_table_vs_plain_time"] = _ratio(statistics.median(r["publish_table_s"]),
                                                                    statistics.median(r["publish_table_plain_s"]))
    return ratios


def _table_detail(results: dict[str, Any], ratio: str) -> str:
    """What a ``*publish_table_vs_plain_time`` ratio is made of: the medians with and without, the commit alone,
    and the table's creation (its first publication, not in the medians)."""
    r = results.get("pipeline_parquet" if ratio.startswith("parquet_") else "pipeline", {})
    if not r.get("publish_table_s"):
        return ""
    med = statistics.median
    return (f"{med(r['publish_table_s']):.2f} s with the commit vs {med(r['publish_table_plain_s']):.2f} s without, "
            f"medians of {len(r['publish_table_s'])}; the commit alone {med(r['table_commit_s']):.2f} s; "
            f"creating the table (first publication, not in the medians) {med(r['publish_table_create_s']):.2f} s, "
            f"of which the commit {med(r['table_create_commit_s']):.2f} s")


def _row(name: str, r: dict[str, Any]) -> str:
    phases = ", ".join(f"{k} {v:.2f}" for k, v in (r.get("phases_s") or {}).items())
    return (f"{name:<16} {r['wall_s']:8.2f} {r['rows_per_s']:12,} {r['cpu_s']:7.2f} {r['peak_rss_mb']:9.0f} "
            f"{r['concurrent_peak_pss_mb']:8.0f}  {phases}")


def print_report(results: dict[str, Any]) -> None:
    rows = results["rows"]
    print(f"\n== results at {rows:,} rows: median wall time of {results['repeats']}+ runs (the contender's own, "
          "start-up and imports excluded); peak RSS of the largest run, each process's peak summed over the "
          "contender's process tree; PSS: the largest sum of the tree's proportional set size")
    print(f"{'contender':<16} {'wall s':>8} {'rows/s':>12} {'cpu s':>7} {'RSS MB':>9} {'PSS MB':>8}  phases (s)")
    for name in CONTENDERS + PARQUET_CONTENDERS:
        if name in results:
            print(_row(name, results[name]))
    for name, r in results.get("variants", {}).items():
        print(_row(name, r) + "  [variant]")
    if "airflow" in results:
        a = results["airflow"]
        print(f"{'airflow':<16} {a['wall_s']:8.2f} {'':>12} {'':>7} {a['peak_rss_mb']:9.0f} {'':>8}  "
              f"airflow dags test; overhead over the pipeline: {a['overhead_s']:.2f} s")
    print()
    for name, value in results["ratios"].items():
        op, bound = TARGETS[name]
        print(f"{name}: {value:.2f}  (target {op} {bound}: {'met' if _met(name, value) else 'NOT met'})")
        if "publish_table" in name:
            print(f"  {_table_detail(results, name)}")
    for name in ("pipeline", "pipeline_parquet"):
        if results.get(name, {}).get("table_skipped"):
            print(f"{name}: publish with the Iceberg table commit not measured: {results[name]['table_skipped']}")
    if "airflow" in results:
        print(f"airflow_overhead_s: {results['airflow']['overhead_s']:.2f}")
    for name in SCALING_RATIOS:
        if name in results.get("memory_scaling", {}):
            value = results["memory_scaling"][name]
            print(f"{name}: {value:.2f}  (target <= {TARGETS[name][1]}: {'met' if _met(name, value) else 'NOT met'})")
    if "engine_instances" in results and "instances_2_vs_1_time" in results["engine_instances"]:
        print(f"instances_2_vs_1_time: {results['engine_instances']['instances_2_vs_1_time']:.2f}  "
              "(bench/engine_instances.py: a GIL-bound model, InstanceCount 2 over 1)")
    la = results.get("load_average", {})
    print(f"load average (1, 5, 15 min) before/after: {la.get('before')} / {la.get('after')}")


def _seconds(value: float) -> str:
    return f"{value:.3f}" if value < 1 else f"{value:.2f}"


def markdown_table(results: dict[str, Any]) -> str:
    """The README table of a run."""
    what = {
        "pipeline": f"shard → local transform (churn DAG settings, InstanceCount "
                    f"{results.get('pipeline', {}).get('instances', '?')}) → publish",
        "naive": "pandas read_csv → predict_proba → to_csv, one process",
        "floor": "pyarrow read_csv + predict + pyarrow write_csv (sum of phases)",
        "shard": "shard step alone (one concatenated file)",
        "split": "GNU `split -n l/K` on the same file",
        "pipeline_parquet": "Parquet in → shard (CSV of the columns sent) → local transform → publish typed Parquet",
        "naive_parquet": "pandas read_parquet → predict_proba → to_parquet, one process",
        "floor_parquet": "pyarrow read_table + predict + pyarrow write_table (sum of phases)",
    }
    lines = ["| contender | what | wall s (median) | rows/s | peak RSS MB |", "|---|---|---:|---:|---:|"]
    for name in CONTENDERS + PARQUET_CONTENDERS:
        if name not in results:
            continue
        r = results[name]
        lines.append(f"| {name} | {what[name]} | {_seconds(r['wall_s'])} | {r['rows_per_s']:,} | "
                     f"{r['peak_rss_mb']:.0f} |")
    if "airflow" in results:
        a = results["airflow"]
        lines.append(f"| airflow | `airflow dags test` of the same DAG (overhead {a['overhead_s']:.1f} s) | "
                     f"{a['wall_s']:.2f} | {round(results['rows'] / a['wall_s']):,} | {a['peak_rss_mb']:.0f} |")
    ratios = results["ratios"]
    lines.append("")
    lines.append("| ratio | value | target |")
    lines.append("|---|---:|---|")
    for name, value in ratios.items():
        op, bound = TARGETS[name]
        lines.append(f"| {name} | {value:.2f} | {op} {bound} {'✅' if _met(name, value) else '❌'} |")
    for name in SCALING_RATIOS:
        if name in results.get("memory_scaling", {}):
            value = results["memory_scaling"][name]
            mark = "✅" if _met(name, value) else "❌"
            lines.append(f"| {name} | {value:.2f} | <= {TARGETS[name][1]} {mark} |")
    details = [f"{name}: {_table_detail(results, name)}." for name in ratios if "publish_table" in name]
    skipped = [f"{name}: the Iceberg table commit was not measured: {results[name]['table_skipped']}."
               for name in ("pipeline", "pipeline_parquet") if results.get(name, {}).get("table_skipped")]
    if details or skipped:
        lines.append("")
        lines.extend(details + skipped)
    m = results.get("machine", {})
    la = results.get("load_average", {}).get("before")
    lines.append("")
    parquet_mb = f", {results['input_parquet_mb']} MB as Parquet" if "input_parquet_mb" in results else ""
    lines.append(f"{results['rows']:,} rows ({results.get('input_mb', '?')} MB of CSV in 8 files{parquet_mb}), "
                 f"median of {results['repeats']} runs; measured {results.get('measured_at', '?')} on "
                 f"{m.get('cores')} cores ({m.get('cpu')}), {m.get('memory_gib')} GiB, {m.get('os')}, "
                 f"Python {m.get('python')}; load average {la} (a shared machine).")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-airflow", action="store_true", help="skip the airflow dags test run")
    parser.add_argument("--no-memory", action="store_true", help="skip the 1M vs 4M memory scaling runs")
    parser.add_argument("--no-engine-instances", action="store_true",
                        help="skip bench/engine_instances.py (InstanceCount 2 vs 1 on a GIL-bound model)")
    parser.add_argument("--no-variants", action="store_true",
                        help="skip the extra runs (pipeline with InstanceCount=1 x 2 threads, shard with numpy)")
    parser.add_argument("--only-memory", action="store_true",
                        help="run only the memory scaling and merge it into bench/results/latest.json")
    path = parser.add_mutually_exclusive_group()
    path.add_argument("--no-parquet", action="store_true", help="skip the Parquet path (its contenders and ratios)")
    path.add_argument("--only-parquet", action="store_true",
                      help="run only the Parquet path (no CSV contenders, variants, shard vs split, Airflow or "
                           "bench/engine_instances.py); writes a results file of its figures alone")
    parser.add_argument("--results", type=Path, default=RESULTS / "latest.json")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.rows < 1:
        parser.error("--rows and --repeats must be positive")
    args.results.parent.mkdir(parents=True, exist_ok=True)
    warm_bytecode()
    csv, parquet = not args.only_parquet, not args.no_parquet
    if args.only_memory:
        results = json.loads(args.results.read_text()) if args.results.exists() else {}
        results["memory_scaling"] = {**results.get("memory_scaling", {}),
                                     **memory_scaling(args.repeats, csv=csv, parquet=parquet)}
    else:
        results = run_all(args.rows, args.repeats, with_airflow=not args.no_airflow,
                          with_variants=not args.no_variants, csv=csv, parquet=parquet)
        if not args.no_memory:
            results["memory_scaling"] = memory_scaling(args.repeats, csv=csv, parquet=parquet)
        if csv and not args.no_engine_instances and (BENCH / "engine_instances.py").exists():
            results["engine_instances"] = engine_instances(args.repeats)
        print_report(results)
    args.results.write_text(json.dumps(results, indent=2) + "\n")
    measured = any(name in results for name in CONTENDERS + PARQUET_CONTENDERS)
    if measured:
        table = markdown_table(results)
        args.results.with_suffix(".md").write_text(table)
        print("\n" + table)
    print(f"\nwrote {args.results.relative_to(REPO) if args.results.is_relative_to(REPO) else args.results}")
    if measured:
        from bench.chart import write_chart

        chart = write_chart(results, args.results.with_suffix(".png"))
        print(f"wrote {chart.relative_to(REPO) if chart.is_relative_to(REPO) else chart}")


if __name__ == "__main__":
    main()
