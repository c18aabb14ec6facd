"""``airflow-bt``: the project's console script."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from airflow_bt.storage import for_uri


def _table(identifier: str, catalog: str | None, output_root: str) -> Any:
    """A table for the read commands: ``--catalog`` (JSON properties), ``$AIRFLOW_BT_CATALOG``, else the default
    catalog of the data root ``output_root`` is under (``<root>/output/<model>``)."""
    from airflow_bt.tables.catalog import catalog_properties, catalog_unavailable, load_catalog

    root = output_root.rstrip("/").rsplit("/output/", 1)[0]
    properties = catalog_properties(json.loads(catalog) if catalog else None, root)
    reason = catalog_unavailable(properties)
    if reason:
        print(f"table {identifier}: {reason}", file=sys.stderr)
        raise SystemExit(3)
    return load_catalog(properties).load_table(identifier)


def _table_arguments(parser: argparse.ArgumentParser, *, required: bool) -> None:
    parser.add_argument("--table", required=required, metavar="NAMESPACE.TABLE",
                        help="the Iceberg table the DAG publishes to (publish.table.identifier): adds each "
                             "attempt's snapshot id")
    parser.add_argument("--catalog", metavar="JSON",
                        help="pyiceberg catalog properties (default: $AIRFLOW_BT_CATALOG, else the SQLite catalog "
                             "under <root>/catalog/ of a file:// root)")


def _cmd_runs(args: argparse.Namespace) -> int:
    from airflow_bt.steps.runs import date_output_root, format_attempts, list_attempts

    root = date_output_root(args.output_root, args.ds)
    attempts = list_attempts(for_uri(root, aws_conn_id=None), root)
    if args.table:
        from airflow_bt.tables.history import attempt_snapshots, day_state

        table = _table(args.table, args.catalog, args.output_root)
        snapshots, current = attempt_snapshots(table), day_state(table, args.ds)["attempt_prefix"]
        for attempt in attempts:
            attempt["snapshot_id"] = snapshots.get(attempt["prefix"])
            attempt["table_current"] = attempt["prefix"] == current
    print(json.dumps(attempts, indent=1) if args.json else format_attempts(attempts, root, table=args.table))
    return 0


def _cmd_table(args: argparse.Namespace) -> int:
    from airflow_bt.tables.history import day_state

    table = _table(args.table, args.catalog, args.output_root)
    state = day_state(table, args.ds)
    if args.json:
        print(json.dumps({"table": args.table, "ds": args.ds, **state}, indent=1))
        return 0
    print(f"table            : {args.table} ({table.metadata_location})")
    print(f"snapshot         : {state['snapshot_id']} (current; {len(table.snapshots())} in the history)")
    print(f"rows of the day  : {state['rows']} in {len(state['files'])} file(s) ({state['partition_column']}="
          f"{args.ds})")
    print(f"attempt          : {state['attempt_prefix'] or '-'}")
    return 0 if state["files"] else 1


def _cmd_gc(args: argparse.Namespace) -> int:
    from airflow_bt.steps.retention import apply_retention, model_roots, parse_age, plan_retention

    try:
        older_than = parse_age(args.older_than)
    except ValueError as exc:
        print(f"error: --older-than: {exc}", file=sys.stderr)
        return 2
    root = args.root.rstrip("/")
    store = for_uri(root, aws_conn_id=None)
    folders = plan_retention(store, *model_roots(root, args.model), older_than)
    doomed = [f for f in folders if f.delete]
    if args.json:
        print(json.dumps([f.as_dict() for f in folders], indent=1))
    else:
        for folder in folders:
            print(f"{'delete' if folder.delete else 'keep  '}  {folder.prefix}  {len(folder.objects)} object(s), "
                  f"{folder.size / 1e6:.1f} MB: {folder.reason}")
    size = sum(f.size for f in doomed) / 1e6
    if not args.apply:
        print(f"dry run: nothing deleted; --apply deletes {len(doomed)} run folder(s), {size:.1f} MB, under "
              f"{root}/work/{args.model}/ (never anything under output/)", file=sys.stderr)
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)
    done = apply_retention(store, folders, logging.getLogger("airflow_bt.gc"))
    print(f"deleted {done['folders']} run folder(s), {done['objects']} object(s), {done['bytes'] / 1e6:.1f} MB",
          file=sys.stderr)
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
    from airflow_bt.transform import TransformSpecError
    from airflow_bt.transform.local_engine import run_transform_job
    from airflow_bt.transform.progress import ProgressPrinter

    docs: list[Any] = []
    for path in (args.request, args.model):
        try:
            with open(path) as fh:
                docs.append(json.load(fh))
        except (OSError, ValueError) as exc:
            print(f"cannot read {path}: {exc}", file=sys.stderr)
            return 2
    request, model = docs
    progress = ProgressPrinter(sys.stderr, every_s=args.progress_every)
    log = logging.getLogger("airflow-bt.local-transform")
    log.propagate = False
    log.setLevel(logging.WARNING if args.quiet else logging.INFO)
    handler = progress.log_handler()
    log.addHandler(handler)
    try:
        description = run_transform_job(request, model, aws_conn_id=args.aws_conn_id, log=log, progress=progress)
    except TransformSpecError as exc:
        print(f"invalid request: {exc}", file=sys.stderr)
        return 2
    finally:
        progress.close()
        log.removeHandler(handler)
    print(json.dumps(description, indent=1, default=str))
    return 0 if description["TransformJobStatus"] == "Completed" else 1


LOCAL_TRANSFORM_HELP = """\
Run a SageMaker CreateTransformJob request (JSON file) against a CreateModel request
(JSON file) on the local engine, outside Airflow, with Batch Transform's semantics.
S3Uri, S3OutputPath and ModelDataUrl may be file:///abs/path URIs as well as s3://.

The model's PrimaryContainer chooses how it is served:
  Image "http://host:port"          a container already running there (your real image)
  Environment AIRFLOW_BT_SERVE_COMMAND
                                    a command the engine starts per instance with the
                                    model's Environment, the SAGEMAKER_* environment and
                                    SAGEMAKER_BIND_TO_PORT (plus PATH, HOME, locale; not
                                    this process's credentials), waits for on /ping, and
                                    stops at the end; it dies with the engine
                                    (placeholders: {port}, {model_dir}, {python})
  anything else (e.g. the SageMaker scikit-learn image URI)
                                    the Python handler code/inference.py (or
                                    SAGEMAKER_PROGRAM) in ModelDataUrl, in process

Progress (objects and records done, records/s) goes to stderr: one updating line on a
terminal, else a line every --progress-every seconds. The job's final description is
printed on stdout as JSON. Exit code: 0 Completed, 1 Failed, 2 invalid request.

examples:
  model.json  {"ModelName": "churn", "PrimaryContainer": {"Image": "sklearn:1.2",
               "ModelDataUrl": "file:///data/models/churn/model.tar.gz"}}
  model.json  {"ModelName": "churn", "PrimaryContainer": {"Image": "http://127.0.0.1:8080"}}
  model.json  {"ModelName": "churn", "PrimaryContainer": {"Image": "churn:dev",
               "Environment": {"AIRFLOW_BT_SERVE_COMMAND": "serve --port {port}"}}}
  job.json    {"TransformJobName": "churn-1", "ModelName": "churn",
               "TransformInput": {"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix",
                 "S3Uri": "file:///data/input/"}}, "ContentType": "text/csv", "SplitType": "Line"},
               "TransformOutput": {"S3OutputPath": "file:///data/out/", "Accept": "text/csv",
                 "AssembleWith": "Line"},
               "TransformResources": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 2}}

  airflow-bt local-transform --model model.json --request job.json
"""


def _cmd_local_sagemaker(args: argparse.Namespace) -> int:
    from airflow_bt.service.server import serve
    from airflow_bt.transform.secrets import masked_environment

    masked_environment({"API_TOKEN": "warm-up"})  # imports Airflow, which sets up logging to stdout: ours wins
    logging.basicConfig(level=getattr(logging, args.log_level.upper()), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    return serve(args.host, args.port, region=args.region, allow_file_uris=args.allow_file_uris,
                 allow_serve_commands=args.allow_serve_commands, allow_model_code=args.allow_model_code,
                 allow_remote_model_urls=args.allow_remote_model_urls, job_logs=args.job_logs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="airflow-bt", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def date_command(name: str, help_text: str, func: Any) -> argparse.ArgumentParser:
        command = sub.add_parser(name, help=help_text)
        command.add_argument("output_root", help="the model's output root, e.g. file:///data/output/churn")
        command.add_argument("--ds", required=True, help="the scored date, YYYY-MM-DD")
        command.set_defaults(func=func)
        return command

    runs = date_command("runs", "list the published attempts of a date", _cmd_runs)
    runs.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _table_arguments(runs, required=False)
    table = date_command("table", "what an Iceberg table holds for a date: snapshot, rows, attempt", _cmd_table)
    table.add_argument("--json", action="store_true", help="print JSON")
    _table_arguments(table, required=True)
    date_command("latest", "summarise the attempt a date's _LATEST.json points to", _cmd_latest)

    gc = sub.add_parser(
        "gc", help="delete old scratch (work/) run folders of published days; a dry run unless --apply",
        description="Delete <root>/work/<model>/dt=<day>/<run>/ folders whose day has a complete publication and "
        "in which nothing was written for --older-than (and no local job lacks its end record). Nothing under "
        "output/ is ever deleted. Without --apply, only prints what it would delete.")
    gc.add_argument("root", help="the data root, e.g. file:///data/scoring or s3://bucket/scoring")
    gc.add_argument("--model", required=True, help="the model (the config's `model`)")
    gc.add_argument("--older-than", required=True, help="age of a run folder's newest object: 14d, 36h, 90m")
    gc.add_argument("--apply", action="store_true", help="delete (default: a dry run)")
    gc.add_argument("--json", action="store_true", help="print the plan as JSON")
    gc.set_defaults(func=_cmd_gc)

    local = sub.add_parser(
        "local-transform",
        help="run a CreateTransformJob request on the local engine",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=LOCAL_TRANSFORM_HELP,
    )
    local.add_argument("--request", required=True, help="CreateTransformJob request, a JSON file")
    local.add_argument("--model", required=True, help="CreateModel request, a JSON file")
    local.add_argument("--aws-conn-id", default=None,
                       help="Airflow connection for s3:// URIs (default: boto3's standard configuration)")
    local.add_argument("--progress-every", type=float, default=5.0, metavar="SECONDS",
                       help="when stderr is not a terminal, print the progress line this often (default 5)")
    local.add_argument("--quiet", action="store_true", help="log warnings and errors only")
    local.set_defaults(func=_cmd_local_transform)

    service = sub.add_parser(
        "local-sagemaker",
        help="serve a SageMaker-compatible API (models, transform jobs) over the local engine",
        description="A small SageMaker-compatible HTTP service (AWS JSON 1.1, X-Amz-Target: SageMaker.<Action>): "
        "CreateModel, DescribeModel, DeleteModel, CreateTransformJob, DescribeTransformJob, ListTransformJobs, "
        "StopTransformJob. Jobs run in background processes on the local engine and reach S3 through boto3's "
        "standard configuration (AWS_ENDPOINT_URL_S3, credentials, region): MinIO, a moto server or AWS. "
        "Point clients at it with AWS_ENDPOINT_URL_SAGEMAKER=http://HOST:PORT (boto3) or the AWS connection's "
        'extra {"service_config": {"sagemaker": {"endpoint_url": "http://HOST:PORT"}}} (Airflow). '
        "Prints 'airflow-bt local-sagemaker listening on http://HOST:PORT' once ready; state is in memory. "
        "Requests are not authenticated, so by default it binds 127.0.0.1, reads and writes s3:// URIs only "
        "(at any depth: manifests, artifacts, submit directories), runs no AIRFLOW_BT_SERVE_COMMAND and no "
        "Python handler model (code/inference.py), calls model containers (an http(s):// Image) on loopback only, "
        "and shows secret-named Environment values as *** in Describe* answers; --host, --allow-file-uris, "
        "--allow-serve-commands, --allow-model-code and --allow-remote-model-urls widen this on purpose. Models "
        "run in child processes that get the container environment, never the service's credentials.",
    )
    service.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; the API has no "
                         "authentication: bind wider only on a network you trust)")
    service.add_argument("--port", type=int, default=8089, help="port to bind; 0 picks a free one (default 8089)")
    service.add_argument("--region", default=None, help="region in ARNs (default: AWS_REGION, AWS_DEFAULT_REGION, "
                         "else us-east-1)")
    service.add_argument("--allow-file-uris", action="store_true",
                         help="also read and write file:// URIs, at any depth (manifest prefixes, ModelDataUrl, "
                         "SAGEMAKER_SUBMIT_DIRECTORY): any client can then read this host's files into S3 "
                         "(SageMaker itself takes s3:// only)")
    service.add_argument("--allow-serve-commands", action="store_true",
                         help="run a model's AIRFLOW_BT_SERVE_COMMAND: any client can then run any command as "
                         "this user (without the service's credentials in its environment)")
    service.add_argument("--allow-model-code", action="store_true",
                         help="run Python handler models (code/inference.py or SAGEMAKER_PROGRAM in the artifact): "
                         "any client can then run any Python code as this user (in a child process, without the "
                         "service's credentials in its environment)")
    service.add_argument("--allow-remote-model-urls", action="store_true",
                         help="call model containers (an http(s):// PrimaryContainer.Image) on any host; by default "
                         "only localhost, 127.0.0.0/8 and ::1, so a client cannot make the service send input data "
                         "elsewhere")
    service.add_argument("--job-logs", default="auto", choices=("auto", "cloudwatch", "memory"),
                         help="where each job's engine and model output goes: CloudWatch Logs, log group "
                         "/aws/sagemaker/TransformJobs, stream <job name>/<instance id>-<start>, as SageMaker's "
                         "(auto: when boto3's configuration names a Logs endpoint, e.g. "
                         "AWS_ENDPOINT_URL_CLOUDWATCH_LOGS or AWS_ENDPOINT_URL), or memory only; either way "
                         "GET /logs/<job name> answers with the job's lines")
    service.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    service.set_defaults(func=_cmd_local_sagemaker)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: Any = args.func(args)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
