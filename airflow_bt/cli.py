"""``airflow-bt``: the project's console script."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from airflow_bt.storage import for_uri


def _cmd_runs(args: argparse.Namespace) -> int:
    from airflow_bt.steps.runs import date_output_root, format_attempts, list_attempts

    root = date_output_root(args.output_root, args.ds)
    attempts = list_attempts(for_uri(root, aws_conn_id=None), root)
    print(json.dumps(attempts, indent=1) if args.json else format_attempts(attempts, root))
    return 0


def _cmd_latest(args: argparse.Namespace) -> int:
    from airflow_bt.steps.publish import read_latest
    from airflow_bt.steps.runs import date_output_root

    root = date_output_root(args.output_root, args.ds)
    store = for_uri(root, aws_conn_id=None)
    latest = read_latest(store, root)
    if latest is None:
        print(f"nothing published under {root}", file=sys.stderr)
        return 1
    manifest = json.loads(store.read_bytes(latest["manifest"]))
    print(f"published prefix : {latest['attempt_prefix']}")
    print(f"rows in          : {manifest['rows_in']}")
    print(f"predictions out  : {manifest['rows_out']}")
    print(f"parts            : {len(manifest['parts'])}")
    print(f"transform job    : {manifest.get('job_name')}")
    print(f"run id / try     : {manifest.get('run_id')} / {manifest.get('try_number')}")
    return 0


def _cmd_local_transform(args: argparse.Namespace) -> int:
    from airflow_bt.transform.local_engine import run_transform_job

    with open(args.request) as fh:
        request = json.load(fh)
    with open(args.model) as fh:
        model = json.load(fh)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    description = run_transform_job(request, model, aws_conn_id=None, log=logging.getLogger("airflow-bt"))
    print(json.dumps(description, indent=1, default=str))
    return 0 if description["TransformJobStatus"] == "Completed" else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="airflow-bt", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    runs = sub.add_parser("runs", help="list the published attempts of a date")
    runs.add_argument("output_root", help="the model's output root, e.g. file:///data/output/churn")
    runs.add_argument("--ds", required=True, help="the scored date, YYYY-MM-DD")
    runs.add_argument("--json", action="store_true", help="print JSON instead of a table")
    runs.set_defaults(func=_cmd_runs)

    latest = sub.add_parser("latest", help="summarise the attempt a date's _LATEST.json points to")
    latest.add_argument("output_root", help="the model's output root, e.g. file:///data/output/churn")
    latest.add_argument("--ds", required=True, help="the scored date, YYYY-MM-DD")
    latest.set_defaults(func=_cmd_latest)

    local = sub.add_parser(
        "local-transform",
        help="run a CreateTransformJob request on the local engine",
        description="Run a SageMaker CreateTransformJob request (JSON file) against a CreateModel request "
        "(JSON file) on the local engine, outside Airflow. Prints the job's final description as JSON; "
        "exits 1 if the job Failed. S3 is reached through boto3's standard configuration.",
    )
    local.add_argument("--request", required=True, help="CreateTransformJob request, a JSON file")
    local.add_argument("--model", required=True, help="CreateModel request, a JSON file")
    local.set_defaults(func=_cmd_local_transform)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: Any = args.func(args)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
