"""The docker-compose stack, run without Docker: the same processes, on loopback.

Everything comes from docker-compose.yaml (and .env.example, as ``--env-file``): moto's S3
server stands in for MinIO; ``airflow-bt local-sagemaker`` runs the local-sagemaker service's
command; minio-init's and airflow-init's commands run as written; the churn DAG runs with the
Airflow services' environment, its aws_default connection included. Only what a container
provides is replaced: a hostname in an endpoint becomes 127.0.0.1 and a free port, a container
path becomes the repo folder mounted there (or the Airflow home for /opt/airflow), and the
metadata DB is SQLite. The DAG gets no conf: the stack's environment makes it use SageMaker.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pyarrow.parquet as pq
import pytest
from airflow_env import BIN, PG_DSN, REPO, PostgresDatabase, airflow, airflow_env, postgres_unavailable_reason
from compose_file import bind_mounts, command, container_ports, environment, load, read_env_file
from sagemaker_stack import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DAG_ID = "churn_nightly_scoring"
AIRFLOW_HOME_IN_IMAGE = "/opt/airflow"
DUMB_INIT = ["/usr/bin/dumb-init", "--"]


class Translation:
    """Container -> loopback: endpoint URLs (by hostname) and container paths (by mount)."""

    def __init__(self, services: dict[str, dict[str, Any]], airflow_home: Path) -> None:
        self.urls: dict[str, str] = {}
        paths = {target.rstrip("/"): (REPO / host).resolve() for s in services.values()
                 for host, target in bind_mounts(s)}
        paths.setdefault(AIRFLOW_HOME_IN_IMAGE, airflow_home)  # named volumes live below the Airflow home
        self.paths = dict(sorted(paths.items(), key=lambda kv: -len(kv[0])))

    def url(self, compose_url: str, loopback_url: str) -> None:
        self.urls[compose_url.rstrip("/")] = loopback_url.rstrip("/")

    def __call__(self, value: str) -> str:
        for old, new in self.urls.items():
            value = re.sub(re.escape(old) + r"(?![\w.-])", new, value)
        for container, host in self.paths.items():
            value = re.sub(r"(?<![\w.-])" + re.escape(container) + r"(?![\w.-])", str(host), value)
        return value

    def env(self, service: dict[str, Any]) -> dict[str, str]:
        return {k: self(v) for k, v in environment(service).items()}

    def argv(self, service: dict[str, Any]) -> list[str]:
        argv = command(service)
        if argv[:2] == DUMB_INIT:
            argv = argv[2:]
        argv = [self(a) for a in argv]
        if argv[0] in ("python", "airflow", "airflow-bt"):
            argv[0] = sys.executable if argv[0] == "python" else str(BIN / argv[0])
        return argv


def base_env() -> dict[str, str]:
    """This process's environment without AWS or Airflow settings: a container has none but its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AIRFLOW"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


@contextmanager
def service_process(argv: list[str], env: dict[str, str], log_path: Path) -> Iterator[str]:
    """Start a service that prints ``... listening on URL`` when ready; yield the URL; stop it."""
    with log_path.open("w") as log:
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=log, text=True)
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if "listening on " not in line:
                raise AssertionError(f"{argv} did not start: {line!r}\n{log_path.read_text()[-3000:]}")
            yield line.rsplit(" ", 1)[-1].strip()
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def run(argv: list[str], env: dict[str, str], what: str) -> str:
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{what} exited {proc.returncode}:\n{output[-4000:]}"
    return output


def boto_client(service: str, url: str, dotenv: dict[str, str]) -> Any:
    import boto3

    return boto3.client(service, endpoint_url=url, region_name="us-east-1",
                        aws_access_key_id=dotenv["MINIO_ROOT_USER"],
                        aws_secret_access_key=dotenv["MINIO_ROOT_PASSWORD"])


@dataclass
class LoopbackStack:
    """The compose file's services, and moto + local-sagemaker running in MinIO's and local-sagemaker's place."""

    dotenv: dict[str, str]
    services: dict[str, dict[str, Any]]
    tr: Translation
    home: Path
    logs: Path
    conn_json: str
    s3_url: str = ""
    sagemaker_url: str = ""

    def airflow_env(self, name: str) -> dict[str, str]:
        """An Airflow service's environment on loopback (SQLite instead of the postgres service)."""
        env = airflow_env(self.home, None, **self.tr.env(self.services[name]))
        env = {k: v for k, v in env.items() if not k.startswith("AWS_")}
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{self.home / 'airflow.db'}"
        env.pop("AIRFLOW__CORE__EXECUTOR")  # goes with the DB (Airflow 2 refuses LocalExecutor on SQLite)
        env["AIRFLOW__CORE__DAGS_FOLDER"] = self.tr("/opt/airflow/dags")
        return env

    def service_env(self, name: str) -> dict[str, str]:
        return {**base_env(), **self.tr.env(self.services[name])}

    def client(self, service: str) -> Any:
        return boto_client(service, self.s3_url if service == "s3" else self.sagemaker_url, self.dotenv)


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[LoopbackStack]:
    from sagemaker_stack import moto_s3_server

    # the .env `make stack-env` writes: .env.example with fresh secrets (the init steps refuse the placeholders)
    generated = tmp_path_factory.mktemp("compose-env") / ".env"
    subprocess.run([sys.executable, str(REPO / "scripts/stack_env.py"), "--out", str(generated)], check=True)
    dotenv = read_env_file(generated)
    services = load(dotenv)["services"]
    home = tmp_path_factory.mktemp("compose-airflow-home")
    logs = tmp_path_factory.mktemp("compose-logs")
    # The aws_default connection, exactly as the Airflow services define it.
    airflow_services = ("airflow-init", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
                        "airflow-apiserver")
    (conn_json,) = {environment(services[n])["AIRFLOW_CONN_AWS_DEFAULT"] for n in airflow_services}
    st = LoopbackStack(dotenv, services, Translation(services, home), home, logs, conn_json)
    endpoints = {svc: cfg["endpoint_url"] for svc, cfg in json.loads(conn_json)["extra"]["service_config"].items()}
    assert urlsplit(endpoints["s3"]).hostname == "minio"
    assert urlsplit(endpoints["sagemaker"]).hostname == "local-sagemaker"

    # The Iceberg catalog: the stack's Postgres is this machine's (a throw-away database airflow-init creates, as
    # it creates `iceberg` in the stack), or SQLite where none is reachable (as the metadata DB is SQLite here).
    catalog_uri = json.loads(environment(services["airflow-scheduler"])["AIRFLOW_BT_CATALOG"])["uri"]
    assert urlsplit(catalog_uri).hostname == "postgres"
    catalog_db = f"airflow_bt_iceberg_{uuid.uuid4().hex[:8]}"
    pg = postgres_unavailable_reason() is None
    server = PG_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg2://", 1)
    st.tr.url(catalog_uri, f"{server}/{catalog_db}" if pg else f"sqlite:///{home / 'iceberg.db'}")

    with moto_s3_server() as s3_url:  # in MinIO's place
        st.s3_url = s3_url
        st.tr.url(endpoints["s3"], s3_url)
        # local-sagemaker: its command, bound to loopback and a free port
        argv = st.tr.argv(services["local-sagemaker"])
        argv[argv.index("--host") + 1], argv[argv.index("--port") + 1] = "127.0.0.1", "0"
        env = st.service_env("local-sagemaker")
        assert env["AWS_ENDPOINT_URL_S3"] == s3_url
        with service_process(argv, env, logs / "local-sagemaker.log") as sagemaker_url:
            st.sagemaker_url = sagemaker_url
            st.tr.url(endpoints["sagemaker"], sagemaker_url)
            try:
                yield st
            finally:
                if pg:
                    PostgresDatabase(catalog_db).drop()  # airflow-init created it


def test_the_stack_scores_a_day_through_minio_and_local_sagemaker(stack):
    st = stack
    # minio-init: the bucket, the demo days and the demo model
    init_env = st.service_env("minio-init")
    demo_log = run(st.tr.argv(st.services["minio-init"]), init_env, "minio-init")
    root = init_env["AIRFLOW_BT_ROOT"]
    assert f"bucket {root.removeprefix('s3://').split('/')[0]}: created" in demo_log, demo_log

    # airflow-init: db migrate (SQLite here), the UI login, the connection
    init_log = run(st.tr.argv(st.services["airflow-init"]), st.airflow_env("airflow-init"), "airflow-init")
    assert f"connection aws_default: s3 -> {st.s3_url}" in init_log, init_log[-3000:]
    assert f"connection aws_default: sagemaker -> {st.sagemaker_url}" in init_log
    passwords_file = environment(st.services["airflow-init"])["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]
    assert json.loads(Path(st.tr(passwords_file)).read_text()) == {
        st.dotenv["AIRFLOW_ADMIN_USER"]: st.dotenv["AIRFLOW_ADMIN_PASSWORD"]}

    # the nightly DAG, as the scheduler's task processes run it: no conf, the stack's environment
    env = st.airflow_env("airflow-scheduler")
    assert env["AIRFLOW_CONN_AWS_DEFAULT"] != st.conn_json  # only the endpoints' hosts were rewritten
    assert json.loads(env["AIRFLOW_CONN_AWS_DEFAULT"])["extra"]["service_config"] == {
        "s3": {"endpoint_url": st.s3_url}, "sagemaker": {"endpoint_url": st.sagemaker_url}}
    ds = init_env["DEMO_END"]
    proc = airflow(env, "dags", "test", DAG_ID, ds, timeout=300)
    log = proc.stdout + proc.stderr
    assert "state=failed" not in log
    assert "deferring: the triggerer polls transform job" in log  # AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE

    manifest = check_published(st.client("s3"), root, ds, rows=int(init_env["DEMO_ROWS"]))
    check_table(st, ds, manifest)
    (job,) = st.client("sagemaker").list_transform_jobs(NameContains="bt-churn-")["TransformJobSummaries"]
    assert job["TransformJobStatus"] == "Completed"
    # the README's way to read the result: `docker compose exec local-sagemaker airflow-bt latest ...`
    latest = run([str(BIN / "airflow-bt"), "latest", f"{root}/output/churn", "--ds", ds],
                 st.service_env("local-sagemaker"), "airflow-bt latest")
    assert f"predictions out  : {init_env['DEMO_ROWS']}" in latest, latest


def test_the_model_container_profile_is_called_over_http_by_local_sagemaker(stack):
    """The profile's container (here the test model server) is what http://model-container:8080 names."""
    st = stack
    service = st.services["model-container"]
    (port,) = container_ports(service)
    image = f"http://model-container:{port}"  # a DAG config's transform.image in the stack
    server = [sys.executable, str(REPO / "tests" / "fixtures" / "model_server.py"), "--port", "0"]
    with service_process(server, st.service_env("model-container"), st.logs / "model-container.log") as url:
        st.tr.url(image, url)
        s3, sm = st.client("s3"), st.client("sagemaker")
        bucket = f"profile-{uuid.uuid4().hex[:8]}"
        s3.create_bucket(Bucket=bucket)
        s3.put_object(Bucket=bucket, Key="in/a.csv", Body=b"1,2\n3,4\n")
        sm.create_model(ModelName="user-image", PrimaryContainer={"Image": st.tr(image)},
                        ExecutionRoleArn="arn:aws:iam::000000000000:role/sm")
        name = f"profile-{uuid.uuid4().hex[:8]}"
        sm.create_transform_job(
            TransformJobName=name, ModelName="user-image",
            TransformInput={"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{bucket}/in/"}},
                            "ContentType": "text/csv", "SplitType": "Line"},
            TransformOutput={"S3OutputPath": f"s3://{bucket}/out/", "Accept": "text/csv", "AssembleWith": "Line"},
            TransformResources={"InstanceType": "ml.m5.large", "InstanceCount": 1})
        described = wait_for(
            lambda: (d := sm.describe_transform_job(TransformJobName=name))["TransformJobStatus"] not in (
                "InProgress", "Stopping") and d, timeout=60, what=f"job {name} to end")
    assert described["TransformJobStatus"] == "Completed", described.get("FailureReason")
    assert s3.get_object(Bucket=bucket, Key="out/a.csv.out")["Body"].read() == b"3\n7\n"  # the rowsum answers


def check_published(s3: Any, root: str, ds: str, rows: int) -> dict[str, Any]:
    """``_LATEST.json`` -> an attempt with ``_SUCCESS``, one scored row per input row, from SageMaker."""
    bucket, _, prefix = root.removeprefix("s3://").partition("/")

    def read(key: str) -> bytes:
        return bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())

    input_rows = 0
    listing = s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/input/churn/dt={ds}/")
    for obj in listing["Contents"]:
        input_rows += len(read(obj["Key"]).decode().splitlines()) - 1  # a header per file
    assert input_rows == rows

    latest = json.loads(read(f"{prefix}/output/churn/dt={ds}/_LATEST.json"))
    attempt = latest["attempt_prefix"].removeprefix(f"s3://{bucket}/")
    read(attempt + "_SUCCESS")
    manifest = json.loads(read(attempt + "_manifest.json"))
    assert manifest["ds"] == ds and manifest["rows_out"] == input_rows
    assert manifest["transform"]["backend"] == "sagemaker" and manifest["transform"]["status"] == "Completed"
    scored = 0
    for part in manifest["parts"]:
        table = pq.read_table(io.BytesIO(read(part["uri"].removeprefix(f"s3://{bucket}/"))))
        assert table.column_names[-2:] == ["churn_probability", "scored_date"]
        assert all(0.0 <= p <= 1.0 for p in table.column("churn_probability").to_pylist())
        scored += table.num_rows
    assert scored == input_rows
    return manifest


def check_table(st: LoopbackStack, ds: str, manifest: dict[str, Any]) -> None:
    """The stack's Iceberg table (the scheduler's AIRFLOW_BT_CATALOG, its S3 through aws_default) holds the
    attempt _LATEST.json names, once (Airflow 3; the SQL catalog cannot run on 2.11, which publish says)."""
    from airflow_bt.tables.catalog import catalog_unavailable, load_catalog
    from airflow_bt.tables.history import day_state

    properties = json.loads(st.airflow_env("airflow-scheduler")["AIRFLOW_BT_CATALOG"])
    if catalog_unavailable(properties):
        return
    properties.update({"s3.endpoint": st.s3_url, "s3.access-key-id": st.dotenv["MINIO_ROOT_USER"],
                       "s3.secret-access-key": st.dotenv["MINIO_ROOT_PASSWORD"], "s3.region": "us-east-1"})
    state = day_state(load_catalog(properties).load_table("scoring.churn"), ds)
    assert state["attempt_prefix"] == manifest["attempt_prefix"]
    assert state["files"] == sorted(p["uri"] for p in manifest["parts"]) and state["rows"] == manifest["rows_out"]
