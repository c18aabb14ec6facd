"""Helpers for tests that run transform jobs: requests, fixture models, input and output folders."""

from __future__ import annotations

import copy
import io
import json
import shlex
import subprocess
import sys
import tarfile
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parent / "fixtures"
MODELS = FIXTURES / "models"
MODEL_SERVER = FIXTURES / "model_server.py"


def model_tarball(dest: Path, name: str) -> str:
    """``model.tar.gz`` of a fixture model folder, as a file:// URI."""
    out = dest / f"{name}.tar.gz"
    if not out.exists():
        with tarfile.open(out, "w:gz") as tar:
            for item in sorted((MODELS / name).rglob("*")):
                if "__pycache__" not in item.parts:
                    tar.add(item, arcname=str(item.relative_to(MODELS / name)), recursive=False)
    return out.as_uri()


#: A handler whose every prediction fails, as a model out of GPU memory does.
OUT_OF_MEMORY_HANDLER = """
def model_fn(model_dir):
    return None


def predict_fn(data, model):
    raise RuntimeError("CUDA error: out of memory")
"""


def inline_handler(dest: Path, name: str, source: str) -> str:
    """``model.tar.gz`` whose ``code/inference.py`` is ``source``, as a file:// URI (for one-off fault models)."""
    out = dest / f"{name}.tar.gz"
    data = textwrap.dedent(source).encode()
    with tarfile.open(out, "w:gz") as tar:
        info = tarfile.TarInfo("code/inference.py")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return out.as_uri()


_CRASHING_SERVER = """\
import os
import sys

sys.path.insert(0, {fixtures!r})
import model_server

_score = model_server.score


def score(line, content_type, base):
    if "CRASH" in line:
        os._exit(1)  # the model server dies mid-request, like an OOM-killed container
    return _score(line, content_type, base)


model_server.score = score
model_server.main()
"""


def crashing_server_model(dest: Path, **env: str) -> dict[str, Any]:
    """A CreateModel request whose serve command runs ``model_server.py`` (rowsum), except that the server
    process exits at once (code 1) when a request holds a row containing ``CRASH``."""
    script = dest / "crashing_server.py"
    script.write_text(_CRASHING_SERVER.format(fixtures=str(FIXTURES)))
    command = f"{{python}} {shlex.quote(str(script))} --port {{port}}"
    return handler_model("", image="my-registry/crashing:dev", AIRFLOW_BT_SERVE_COMMAND=command, **env)


def handler_model(url: str, image: str = "local/sklearn", **env: str) -> dict[str, Any]:
    """A CreateModel request for a Python handler model (or any image) named ``test-model``."""
    container: dict[str, Any] = {"Image": image}
    if url:
        container["ModelDataUrl"] = url
    if env:
        container["Environment"] = env
    return {"ModelName": "test-model", "PrimaryContainer": container}


def transform_request(inp: str, out: str, **overrides: Any) -> dict[str, Any]:
    """A CreateTransformJob request: CSV lines in and out, one instance, no retries.

    ``overrides`` set top-level fields, or TransformInput / TransformOutput / TransformResources
    fields by their names (``SplitType=...``, ``Accept=...``, ``InstanceCount=...``); ``S3DataType``
    sets the data source type.
    """
    req: dict[str, Any] = {
        "TransformJobName": "job-1",
        "ModelName": "test-model",
        "TransformInput": {"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": inp}},
                           "ContentType": "text/csv", "SplitType": "Line"},
        "TransformOutput": {"S3OutputPath": out, "Accept": "text/csv", "AssembleWith": "Line"},
        "TransformResources": {"InstanceType": "ml.m5.large", "InstanceCount": 1},
        "ModelClientConfig": {"InvocationsMaxRetries": 0},
    }
    for key, value in copy.deepcopy(overrides).items():
        if key in ("SplitType", "CompressionType", "ContentType"):
            req["TransformInput"][key] = value
        elif key == "S3DataType":
            req["TransformInput"]["DataSource"]["S3DataSource"][key] = value
        elif key in ("AssembleWith", "Accept"):
            req["TransformOutput"][key] = value
        elif key == "InstanceCount":
            req["TransformResources"][key] = value
        elif value is None:
            req.pop(key, None)
        else:
            req[key] = value
    return req


def write_files(root: Path, files: dict[str, bytes]) -> str:
    """Write ``files`` (relative key -> bytes) under ``root``; return its file:// URI with a slash."""
    root.mkdir(parents=True, exist_ok=True)
    for key, data in files.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(data)
    return root.as_uri() + "/"


def read_outputs(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (relative key -> bytes); ``{}`` if it does not exist."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@contextmanager
def running_model_server(**env: str) -> Iterator[str]:
    """Start ``tests/fixtures/model_server.py`` on a free port; yield its base URL; stop it."""
    import os

    proc = subprocess.Popen([sys.executable, str(MODEL_SERVER), "--port", "0"], stdout=subprocess.PIPE,
                            env={**os.environ, **env}, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # printed once the socket accepts connections
        assert line.startswith("listening on "), line
        yield line.split()[-1]
    finally:
        proc.terminate()
        proc.wait(10)


def write_json(path: Path, doc: Any) -> str:
    path.write_text(json.dumps(doc))
    return str(path)


#: A model that fails every request holding row 13 (``13,...``) until the file ``HEAL_MARKER`` names exists,
#: and sleeps ``SLOW_SECONDS`` per request; it predicts each row's first column.
FLAKY_ROW_13_HANDLER = '''
import os, time


def model_fn(model_dir):
    return None


def input_fn(body, content_type):
    return body.decode().splitlines()


def predict_fn(rows, model):
    time.sleep(float(os.environ.get("SLOW_SECONDS", "0")))
    heal = os.environ.get("HEAL_MARKER")
    if heal and any(r.startswith("13,") for r in rows) and not os.path.exists(heal):
        raise ValueError("row 13 cannot be scored yet")
    return [r.split(",")[0] for r in rows]


def output_fn(predictions, accept):
    return "".join(p + "\\n" for p in predictions)
'''
