"""A moto server (S3 and CloudWatch Logs) and `airflow-bt local-sagemaker`, both on 127.0.0.1 ephemeral ports.

The service runs as a user runs it (the console script, as a subprocess), finding S3 and CloudWatch Logs
through boto3's standard configuration (``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL_CLOUDWATCH_LOGS``): it
writes its jobs' logs to the moto server. Airflow reaches them through one ``aws_default`` connection whose
extra sets an endpoint per service.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airflow_env import BIN

WAREHOUSE_BUCKET = "iceberg-warehouse"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@dataclass
class Stack:
    s3_url: str
    sagemaker_url: str
    service_log: Path
    service_pid: int
    #: where the DAG runs' Iceberg catalog lives (SQLite), its warehouse in the bucket WAREHOUSE_BUCKET
    catalog_dir: Path | None = None

    @property
    def logs_url(self) -> str:
        """CloudWatch Logs: the moto server that serves S3 serves it too."""
        return self.s3_url

    def boto_env(self) -> dict[str, str]:
        """Environment for plain boto3 (and the AWS CLI) to use the endpoints."""
        return {**CREDENTIALS, "AWS_ENDPOINT_URL_S3": self.s3_url, "AWS_ENDPOINT_URL_SAGEMAKER": self.sagemaker_url,
                "AWS_ENDPOINT_URL_CLOUDWATCH_LOGS": self.logs_url}

    def airflow_connection(self) -> str:
        """``AIRFLOW_CONN_AWS_DEFAULT``: one AWS connection, an endpoint per service."""
        return json.dumps({
            "conn_type": "aws",
            "login": CREDENTIALS["AWS_ACCESS_KEY_ID"],
            "password": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            "extra": {
                "region_name": "us-east-1",
                "service_config": {"s3": {"endpoint_url": self.s3_url},
                                   "sagemaker": {"endpoint_url": self.sagemaker_url},
                                   "logs": {"endpoint_url": self.logs_url}},
            },
        })

    def airflow_env(self) -> dict[str, str]:
        """What Airflow needs: the connection (no endpoint environment variables), and the catalog of the
        shipped DAGs' ``publish.table`` for an s3:// root (a SQL catalog on SQLite, its warehouse on this S3: the
        connection gives the S3 endpoint and keys, as in the docker-compose stack)."""
        env = {**CREDENTIALS, "AIRFLOW_CONN_AWS_DEFAULT": self.airflow_connection()}
        if self.catalog_dir is not None:
            env["AIRFLOW_BT_CATALOG"] = json.dumps({"type": "sql", "uri": f"sqlite:///{self.catalog_dir}/catalog.db",
                                                    "warehouse": f"s3://{WAREHOUSE_BUCKET}/warehouse"})
        return env

    def client(self, service: str) -> Any:
        import boto3

        url = {"s3": self.s3_url, "logs": self.logs_url}.get(service, self.sagemaker_url)
        return boto3.client(service, endpoint_url=url, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")


@contextmanager
def moto_s3_server() -> Iterator[str]:
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


#: The flags the tests' service runs with: its models are Python handlers (user code, an opt-in).
SERVICE_FLAGS = ("--allow-model-code",)


@contextmanager
def local_sagemaker(s3_url: str, log_path: Path, flags: tuple[str, ...] = SERVICE_FLAGS,
                    extra_env: dict[str, str] | None = None) -> Iterator[tuple[str, int]]:
    """`airflow-bt local-sagemaker --port 0 <flags>` in a subprocess; yields its URL and pid once it listens.

    Its jobs' logs go to CloudWatch Logs on the moto server at ``s3_url`` (which serves every service).
    ``extra_env``: more variables for the service's own environment (e.g. secrets no model may see).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AIRFLOW"))}
    env.update(CREDENTIALS, AWS_ENDPOINT_URL_S3=s3_url, AWS_ENDPOINT_URL_CLOUDWATCH_LOGS=s3_url)
    env.update(extra_env or {})
    with log_path.open("w") as log:
        proc = subprocess.Popen([str(BIN / "airflow-bt"), "local-sagemaker", "--host", "127.0.0.1", "--port", "0",
                                 *flags], env=env, stdout=subprocess.PIPE, stderr=log, text=True)
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()  # the service prints one line once it listens
            if "listening on " not in line:
                raise AssertionError(f"local-sagemaker did not start: {line!r}\n{log_path.read_text()[-3000:]}")
            yield line.rsplit(" ", 1)[-1].strip(), proc.pid
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_for(predicate: Callable[[], Any], timeout: float = 60, interval: float = 0.1, what: str = "") -> Any:
    """Poll ``predicate`` until it returns something truthy (an event seen through the API, not a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(interval)


def model_tarball(files: dict[str, str]) -> bytes:
    """A ``model.tar.gz`` holding ``files`` (path -> text)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


#: A handler that scores each CSV row 0.5, slowly: it sleeps ``SLOW_SECONDS`` per request, or (with
#: ``RELEASE_URI``, an s3:// object) holds every request until that object exists. The service never
#: hands a model its own credentials: the S3 endpoint and keys must be in the model's Environment.
SLOW_HANDLER = '''
import os, time


def model_fn(model_dir):
    return {"seconds": float(os.environ.get("SLOW_SECONDS", "1")), "release": os.environ.get("RELEASE_URI")}


def input_fn(data, content_type):
    return data.decode("utf-8").splitlines()


def predict_fn(rows, model):
    if model["release"]:
        import boto3

        bucket, _, key = model["release"].removeprefix("s3://").partition("/")
        s3 = boto3.client("s3")
        while s3.list_objects_v2(Bucket=bucket, Prefix=key).get("KeyCount", 0) == 0:
            time.sleep(0.2)
    else:
        time.sleep(model["seconds"])
    return ["0.500000" for _ in rows]


def output_fn(predictions, accept):
    return "".join(p + "\\n" for p in predictions)
'''


def upload_tree(s3: Any, bucket: str, prefix: str, folder: Path) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            s3.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(folder).as_posix()}")


ROWSUM = Path(__file__).resolve().parent / "fixtures" / "models" / "rowsum"


def rowsum_tarball() -> bytes:
    """The rowsum test model (one prediction per CSV row: the sum of its numbers) as model.tar.gz."""
    return model_tarball({"model.json": (ROWSUM / "model.json").read_text(),
                          "code/inference.py": (ROWSUM / "code" / "inference.py").read_text()})


def fresh_bucket(stack: Stack) -> tuple[Any, str]:
    """A new, empty bucket in the moto server; returns (S3 client, bucket name)."""
    import uuid

    s3 = stack.client("s3")
    bucket = f"bt-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    return s3, bucket


def botocore_report(operation: str, params: dict[str, Any]) -> str:
    """What boto3 would refuse in a SageMaker request before sending it ('' when it is valid)."""
    import botocore.session
    from botocore.validate import ParamValidator

    model = botocore.session.get_session().get_service_model("sagemaker")
    return str(ParamValidator().validate(params, model.operation_model(operation).input_shape).generate_report())
