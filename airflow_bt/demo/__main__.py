"""``python -m airflow_bt.demo``: make demo scoring data and the demo churn model.

Examples::

    python -m airflow_bt.demo data --root demo-data --start 2026-06-22 --end 2026-06-24 \
        --rows 100000 --files 4
    python -m airflow_bt.demo model --out demo-data/models/churn --rows 50000
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also usable as a sub-parser source by another CLI)."""
    parser = argparse.ArgumentParser(
        prog="python -m airflow_bt.demo",
        description="Generate the synthetic customer-churn demo data and train the demo model.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{data,model}")

    data = sub.add_parser(
        "data",
        help="write daily scoring input partitions",
        description="Write <root>/input/<model>/dt=<ds>/customers-NNNN.csv for every date in [start, end].",
    )
    add_data_arguments(data)

    model = sub.add_parser(
        "model",
        help="train the churn model and pack model.tar.gz",
        description="Train the demo churn model; write model.tar.gz, the unpacked artifact and metrics.json.",
    )
    add_model_arguments(model)
    return parser


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of the ``data`` command."""
    parser.add_argument("--root", required=True, help="local root folder (or file:// URI)")
    parser.add_argument("--start", required=True, help="first date, YYYY-MM-DD")
    parser.add_argument("--end", help="last date, YYYY-MM-DD, inclusive (default: --start)")
    parser.add_argument("--rows", type=int, default=100_000, help="rows per date (default: 100000)")
    parser.add_argument("--files", type=int, default=4, help="files per date (default: 4)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--model", default="churn", help="model name in the path (default: churn)")
    parser.add_argument(
        "--parquet",
        action="store_true",
        help="also write a typed Parquet copy of each day under <root>/input/<model>_parquet/dt=<ds>/",
    )


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of the ``model`` command."""
    parser.add_argument("--out", required=True, help="output folder, e.g. demo-data/models/churn")
    parser.add_argument("--rows", type=int, default=50_000, help="training rows (default: 50000)")
    parser.add_argument("--seed", type=int, default=7, help="random seed (default: 7)")


def run_data(args: argparse.Namespace) -> int:
    """Generate the partitions and print what was written."""
    from airflow_bt.demo.data import generate_range, parquet_folder, split_rows

    started = time.perf_counter()
    partitions = generate_range(
        args.root,
        args.model,
        start=args.start,
        end=args.end,
        rows=args.rows,
        files=args.files,
        seed=args.seed,
        parquet=args.parquet,
    )
    seconds = time.perf_counter() - started
    per_file = split_rows(args.rows, args.files)
    for folder in partitions:
        size = sum(os.path.getsize(os.path.join(folder, name)) for name in os.listdir(folder))
        print(f"{folder}  {args.files} files  {args.rows} rows  {size / 1e6:.1f} MB")
        if args.parquet:
            copy = parquet_folder(folder)
            size = sum(os.path.getsize(os.path.join(copy, name)) for name in os.listdir(copy))
            print(f"{copy}  {args.files} files  {args.rows} rows  {size / 1e6:.1f} MB (Parquet)")
    total = args.rows * len(partitions)
    rate = total / seconds if seconds > 0 else float("inf")
    print(
        f"wrote {len(partitions)} partition(s), {total} rows ({per_file[0]} rows/file) "
        f"in {seconds:.2f} s ({rate:,.0f} rows/s)"
    )
    return 0


def run_model(args: argparse.Namespace) -> int:
    """Train and package the model and print what was written."""
    from airflow_bt.demo.model import METRICS_FILE, train_model

    started = time.perf_counter()
    tarball = train_model(args.out, rows=args.rows, seed=args.seed)
    seconds = time.perf_counter() - started
    with open(os.path.join(args.out, METRICS_FILE), encoding="utf-8") as fh:
        metrics = json.load(fh)
    print(f"{tarball}  {os.path.getsize(tarball) / 1e3:.0f} kB")
    print(f"{os.path.join(args.out, METRICS_FILE)}")
    print(
        f"trained on {metrics['train_rows']} rows in {metrics['train_seconds']:.2f} s, "
        f"held-out AUC {metrics['holdout_auc']:.4f} ({seconds:.2f} s total)"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "data":
            return run_data(args)
        return run_model(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
