"""One-shot init steps of the docker-compose stack (docker-compose.yaml runs them; so do the tests).

    python scripts/stack_init.py check-secrets  # airflow-init, first: no `change-me` placeholder is left
    python scripts/stack_init.py demo      # minio-init: bucket, demo input days, demo model
    python scripts/stack_init.py airflow   # airflow-init (after `airflow db migrate`): UI login, connection

Every command first refuses to run while a variable of its environment still holds the
``change-me`` placeholder of ``.env.example`` (``make stack-env`` writes a ``.env`` with fresh
secrets), so the stack never starts with credentials everyone knows.

``demo`` reaches S3 through boto3's standard environment (``AWS_ENDPOINT_URL_S3``, credentials,
region): MinIO in the stack, a moto server in the tests. It creates the bucket of
``$AIRFLOW_BT_ROOT`` if missing, then writes ``<root>/input/churn/dt=<day>/customers-NNNN.csv``
for the days ``DEMO_START``..``DEMO_END`` plus the ``DEMO_RECENT_DAYS`` days before today (UTC),
and the demo model under ``<root>/models/churn/``. A day or model that already has objects is
left alone (the input is upstream-owned), so the step can run again safely.

``airflow`` writes the simple auth manager's password file (the UI login ``AIRFLOW_ADMIN_USER``
/ ``AIRFLOW_ADMIN_PASSWORD``), creates the Iceberg catalog's database named by ``$AIRFLOW_BT_CATALOG``
(a SQL catalog on the stack's Postgres) when it is missing, and shows the ``aws_default`` connection's endpoints (the
connection itself is defined by ``AIRFLOW_CONN_AWS_DEFAULT`` in every Airflow container).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stack_env import placeholder_names  # beside this file (mounted at /opt/airflow_bt/scripts)

MODEL = "churn"


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.strip() else default


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> ``("bucket", "some/prefix")``."""
    if not uri.startswith("s3://"):
        raise SystemExit(f"error: the data root must be an s3:// URI, got {uri!r}")
    bucket, _, prefix = uri[len("s3://"):].partition("/")
    return bucket, prefix.strip("/")


def demo_days(start: str, end: str, recent_days: int, today: dt.date | None = None) -> list[str]:
    """The days to load: ``start``..``end`` and the ``recent_days`` days before ``today``, sorted."""
    first, last = dt.date.fromisoformat(start), dt.date.fromisoformat(end)
    if last < first:
        raise SystemExit(f"error: DEMO_END {end} is before DEMO_START {start}")
    days = {first + dt.timedelta(days=i) for i in range((last - first).days + 1)}
    today = today or dt.datetime.now(dt.timezone.utc).date()
    days.update(today - dt.timedelta(days=i) for i in range(1, recent_days + 1))
    return [d.isoformat() for d in sorted(days)]


def _has_objects(s3: Any, bucket: str, prefix: str) -> bool:
    return bool(s3.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1).get("KeyCount", 0))


def _ensure_bucket(s3: Any, bucket: str) -> None:
    from botocore.exceptions import ClientError

    try:
        s3.head_bucket(Bucket=bucket)
        print(f"bucket {bucket}: exists")
        return
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
            raise
    region = s3.meta.region_name
    extra = {} if region in (None, "us-east-1") else {"CreateBucketConfiguration": {"LocationConstraint": region}}
    s3.create_bucket(Bucket=bucket, **extra)
    print(f"bucket {bucket}: created")


def _upload_tree(s3: Any, folder: Path, bucket: str, prefix: str) -> int:
    count = 0
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            s3.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(folder).as_posix()}")
            count += 1
    return count


def _key(prefix: str, rest: str) -> str:
    return f"{prefix}/{rest}" if prefix else rest


def run_demo(args: argparse.Namespace) -> int:
    import boto3

    from airflow_bt.demo.data import generate_partition
    from airflow_bt.demo.model import train_model

    bucket, prefix = split_s3_uri(args.root)
    s3 = boto3.client("s3")
    print(f"S3 endpoint {s3.meta.endpoint_url}, data root {args.root}")
    _ensure_bucket(s3, bucket)
    with tempfile.TemporaryDirectory(prefix="stack-init-") as tmp:
        for ds in demo_days(args.start, args.end, args.recent_days):
            day_prefix = _key(prefix, f"input/{MODEL}/dt={ds}")
            if _has_objects(s3, bucket, day_prefix + "/"):
                print(f"s3://{bucket}/{day_prefix}/: has data, left alone")
                continue
            folder = Path(tmp) / "input" / ds
            generate_partition(str(folder), ds, args.rows, files=args.files)
            n = _upload_tree(s3, folder, bucket, day_prefix)
            print(f"s3://{bucket}/{day_prefix}/: {n} files, {args.rows} rows")
        model_prefix = _key(prefix, f"models/{MODEL}")
        if _has_objects(s3, bucket, model_prefix + "/model.tar.gz"):
            print(f"s3://{bucket}/{model_prefix}/model.tar.gz: exists, left alone")
        else:
            folder = Path(tmp) / "model"
            train_model(str(folder), rows=args.model_rows)
            n = _upload_tree(s3, folder, bucket, model_prefix)
            print(f"s3://{bucket}/{model_prefix}/: demo model, {n} files")
    return 0


def write_passwords_file(path: str, user: str, password: str) -> None:
    """The simple auth manager's password file, holding ``user``'s password (other users kept)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    passwords: dict[str, str] = {}
    if target.exists() and target.read_text().strip():
        passwords = json.loads(target.read_text())
    passwords[user] = password
    target.write_text(json.dumps(passwords) + "\n")
    target.chmod(0o660)


def connection_endpoints(conn_id: str) -> dict[str, str]:
    """Service -> endpoint URL of an Airflow AWS connection, as Airflow resolves it (no secrets)."""
    proc = subprocess.run(["airflow", "connections", "get", conn_id, "-o", "json"],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"error: connection {conn_id!r} is not defined:\n{proc.stderr[-2000:]}")
    conn: dict[str, Any] = {}
    for line in proc.stdout.splitlines():  # Airflow may print log lines on stdout too
        if line.startswith("[{"):
            try:
                (conn,) = json.loads(line)
                break
            except ValueError:
                continue
    config = (conn.get("extra_dejson") or {}).get("service_config") or {}
    return {service: str(cfg.get("endpoint_url")) for service, cfg in sorted(config.items())}


def ensure_catalog_database(catalog: str | None) -> str:
    """Create the database of ``$AIRFLOW_BT_CATALOG``'s SQL catalog on PostgreSQL when it is missing (the
    scoring DAGs' Iceberg tables; pyiceberg creates its own tables in it)."""
    if not catalog:
        return "no $AIRFLOW_BT_CATALOG: the DAGs' own publish.table catalog is used"
    uri = str(json.loads(catalog).get("uri", ""))
    if not uri.startswith("postgresql"):
        return f"Iceberg catalog: {uri.split('://', 1)[0] or 'not a SQL catalog'}; nothing to create"
    import sqlalchemy

    url = sqlalchemy.engine.make_url(uri)
    engine = sqlalchemy.create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        exists = conn.execute(sqlalchemy.text("SELECT 1 FROM pg_database WHERE datname = :name"),
                              {"name": url.database}).scalar()
        if not exists:
            conn.execute(sqlalchemy.text(f'CREATE DATABASE "{url.database}"'))
    engine.dispose()
    return f"Iceberg catalog database {url.database!r} on {url.host}: {'exists' if exists else 'created'}"


def run_airflow(args: argparse.Namespace) -> int:
    user, password = os.environ.get("AIRFLOW_ADMIN_USER"), os.environ.get("AIRFLOW_ADMIN_PASSWORD")
    path = os.environ.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE")
    if user and password and path:
        write_passwords_file(path, user, password)
        print(f"UI login: user {user!r} (admin role), password from AIRFLOW_ADMIN_PASSWORD, in {path}")
    else:
        print("AIRFLOW_ADMIN_USER/AIRFLOW_ADMIN_PASSWORD/AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE "
              "not all set: no UI login written")
    print(ensure_catalog_database(os.environ.get("AIRFLOW_BT_CATALOG")))
    endpoints = connection_endpoints(args.conn_id)
    for service, url in endpoints.items():
        print(f"connection {args.conn_id}: {service} -> {url}")
    if not endpoints:
        print(f"connection {args.conn_id}: no per-service endpoints (AWS itself)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stack_init.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="create the bucket; load demo input days and the demo model")
    demo.add_argument("--root", default=os.environ.get("AIRFLOW_BT_ROOT"), help="s3:// data root ($AIRFLOW_BT_ROOT)")
    demo.add_argument("--start", default=os.environ.get("DEMO_START") or "2026-06-22", help="$DEMO_START")
    demo.add_argument("--end", default=os.environ.get("DEMO_END") or "2026-06-24", help="$DEMO_END")
    demo.add_argument("--recent-days", type=int, default=_env_int("DEMO_RECENT_DAYS", 2), help="$DEMO_RECENT_DAYS")
    demo.add_argument("--rows", type=int, default=_env_int("DEMO_ROWS", 20_000), help="rows per day ($DEMO_ROWS)")
    demo.add_argument("--files", type=int, default=_env_int("DEMO_FILES", 4), help="files per day ($DEMO_FILES)")
    demo.add_argument("--model-rows", type=int, default=_env_int("DEMO_MODEL_ROWS", 50_000),
                      help="training rows ($DEMO_MODEL_ROWS)")
    demo.set_defaults(func=run_demo)
    airflow = sub.add_parser("airflow", help="write the UI login; show the aws_default connection")
    airflow.add_argument("--conn-id", default="aws_default")
    airflow.set_defaults(func=run_airflow)
    check = sub.add_parser("check-secrets", help="fail if a `change-me` placeholder of .env.example is left")
    check.set_defaults(func=lambda args: print("no example placeholder among the stack's settings") or 0)
    return parser


def refuse_example_secrets(env: dict[str, str] | None = None) -> None:
    """Exit naming the variables that still hold ``.env.example``'s placeholder."""
    left = placeholder_names(dict(os.environ if env is None else env))
    if left:
        raise SystemExit(f"error: {', '.join(left)} still hold(s) the `change-me` placeholder of .env.example; "
                         "the stack does not start with example credentials. Run `make stack-env` (a .env with "
                         "fresh random secrets) or set them in .env, then `docker compose up -d` again")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    refuse_example_secrets()
    if args.command == "demo" and not args.root:
        raise SystemExit("error: set AIRFLOW_BT_ROOT (or --root) to the s3:// data root")
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
