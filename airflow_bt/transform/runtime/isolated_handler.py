"""A Python handler model run in a child process of its own, with the container environment only.

Where the requests come from others (``airflow-bt local-sagemaker``, ``EnginePolicy.isolate_model_code``)
the handler is user-supplied code, and the engine's process holds the service's credentials in
``os.environ``. So the engine does what SageMaker does for a framework container: it fetches the
artifact (and a ``SAGEMAKER_SUBMIT_DIRECTORY``) itself, through the policy-guarded storage, then starts
``python -m airflow_bt.transform.runtime.handler_server`` on the unpacked model directory — through the
serve runtime's machinery (:class:`~airflow_bt.transform.runtime.serve.ServeCommandRuntime`): a free
loopback port, :func:`~airflow_bt.transform.runtime.serve.serve_environment` (the model's and the job's
``Environment`` and ``SAGEMAKER_*``, never the engine's credentials), :func:`~airflow_bt.transform.runtime.
children.start_child` (it dies with the engine, also through a stdin pipe only the engine holds), the
``/ping`` wait bounded by ``AIRFLOW_BT_START_TIMEOUT``, and HTTP for ``/invocations``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

import airflow_bt
from airflow_bt.transform.runtime.artifacts import fetch_model_dir
from airflow_bt.transform.runtime.base import ModelRuntimeError
from airflow_bt.transform.runtime.python_handler import SUBMIT_DIRECTORY_ENV
from airflow_bt.transform.runtime.serve import ServeCommandRuntime

SERVER_MODULE = "airflow_bt.transform.runtime.handler_server"
#: The folder that holds the ``airflow_bt`` package this engine runs, put first on the child's PYTHONPATH
#: so the handler server is this same code whatever the working directory.
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(airflow_bt.__file__)))


class IsolatedHandlerRuntime(ServeCommandRuntime):
    """:class:`~airflow_bt.transform.runtime.python_handler.PythonHandlerRuntime`'s model, served by a child."""

    temp_prefix = "airflow-bt-handler-"
    default_content_type = ""  # the handler sees the job's ContentType as given, "" included, as in process

    def _command_of(self, model_request: Mapping[str, Any]) -> str:
        container = model_request.get("PrimaryContainer") or {}
        if not container.get("ModelDataUrl"):
            raise ModelRuntimeError(
                f"model {model_request.get('ModelName')!r}: the Python handler runtime needs "
                "PrimaryContainer.ModelDataUrl (a model.tar.gz with code/inference.py)")
        return f"python -m {SERVER_MODULE}"

    @property
    def what(self) -> str:
        return f"the handler server of model {self.model_request.get('ModelName')!r} ({self.model_data_url})"

    def _stdin(self) -> int:
        return subprocess.PIPE  # never written: its end-of-file tells the server the engine is gone

    def _argv(self, port: int, env: dict[str, str]) -> list[str]:
        assert self.model_dir is not None and self.temp_dir is not None
        argv = [sys.executable, "-m", SERVER_MODULE, self.model_dir, "--port", str(port), "--exit-on-stdin-eof",
                "--model-name", str(self.model_request.get("ModelName", "")),
                "--model-data-url", str(self.model_data_url)]
        submit = env.get(SUBMIT_DIRECTORY_ENV, "")
        if submit.startswith(("s3://", "file://")):  # fetched here, with the engine's storage and policy
            code_dir = os.path.join(self.temp_dir, "code")
            fetch_model_dir(submit, code_dir, self._storage_for)
            argv += ["--code-dir", code_dir]
        env["PYTHONPATH"] = os.pathsep.join(p for p in (PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
        return argv
