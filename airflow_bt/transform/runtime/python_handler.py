"""A model served by a Python handler module, the SageMaker framework-container way.

The artifact (``PrimaryContainer.ModelDataUrl``: a ``model.tar.gz`` or a folder) is
unpacked into a temporary model directory. The handler is ``code/inference.py`` in it,
or ``code/<SAGEMAKER_PROGRAM>``; with ``SAGEMAKER_SUBMIT_DIRECTORY`` set to an
``s3://``/``file://`` archive or folder, the code comes from there instead. The handler
defines ``model_fn(model_dir)`` and optionally ``input_fn(data, content_type)``,
``predict_fn(data, model)``, ``output_fn(prediction, accept)`` (or one
``transform_fn(model, data, content_type, accept)``), and ``execution_parameters()``
returning a dict like the container's ``GET /execution-parameters``.

The container environment is set in ``os.environ`` for the life of the runtime (and
restored by :meth:`PythonHandlerRuntime.close`), so one process should run one
runtime at a time. This runs the handler in the calling process, with whatever else that
process's environment holds: the embedded engine's fast path (the user's own code in the user's
own task). Where the requests come from others (``airflow-bt local-sagemaker``) the engine runs
it in a child process instead (:mod:`~airflow_bt.transform.runtime.handler_server`), which
builds this runtime on the model directory the engine fetched (``model_dir=``). With
``MaxConcurrentTransforms`` > 1 the handler is called from
several threads and must be thread-safe (scikit-learn's ``predict`` is).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

from airflow_bt.storage import for_uri
from airflow_bt.transform.runtime.artifacts import fetch_model_dir
from airflow_bt.transform.runtime.base import ModelRuntimeError, StorageResolver
from airflow_bt.transform.runtime.handler_defaults import (
    DEFAULT_ACCEPT,
    default_input_fn,
    default_output_fn,
    default_predict_fn,
)

DEFAULT_PROGRAM = "inference.py"
SUBMIT_DIRECTORY_ENV = "SAGEMAKER_SUBMIT_DIRECTORY"


def _default_storage_for(uri: str) -> Any:
    return for_uri(uri, aws_conn_id=None)


def _as_bytes(result: Any, where: str) -> bytes:
    if isinstance(result, bytes):
        return result
    if isinstance(result, str):
        return result.encode("utf-8")
    if isinstance(result, (bytearray, memoryview)):
        return bytes(result)
    if isinstance(result, tuple) and result:  # (body, content_type), as some handlers return
        return _as_bytes(result[0], where)
    raise ModelRuntimeError(f"{where} returned {type(result).__name__}; expected bytes or str")


class PythonHandlerRuntime:
    """A :class:`~airflow_bt.transform.runtime.base.ModelRuntime` for a ``model_fn``/``input_fn`` handler."""

    def __init__(self, model_request: Mapping[str, Any], *, storage_for: StorageResolver | None = None,
                 temp_root: str | None = None, model_dir: str | None = None, code_dir: str | None = None) -> None:
        """``model_dir``/``code_dir``: an artifact (and submit directory) already unpacked there, by whoever
        owns them (they are not removed): nothing is fetched."""
        container = model_request.get("PrimaryContainer") or {}
        url = container.get("ModelDataUrl") or model_dir
        if not url:
            raise ModelRuntimeError(
                f"model {model_request.get('ModelName')!r}: the Python handler runtime needs "
                "PrimaryContainer.ModelDataUrl (a model.tar.gz with code/inference.py)")
        self.model_name = str(model_request.get("ModelName", ""))
        self.model_data_url = str(url)
        self.model_environment: dict[str, str] = dict(container.get("Environment") or {})
        self._storage_for = storage_for or _default_storage_for
        self._temp_root = temp_root
        self.temp_dir: str | None = None
        self.model_dir: str | None = None
        self._local_model_dir = model_dir
        self._local_code_dir = code_dir
        self.module: ModuleType | None = None
        self.model: Any = None
        self._loaded = False
        self._saved_env: dict[str, str | None] = {}
        self._sys_path_entry: str | None = None
        self._module_name: str | None = None
        self._default_accept = DEFAULT_ACCEPT
        self._input_fn: Callable[[bytes, str], Any] = default_input_fn
        self._predict_fn: Callable[[Any, Any], Any] = default_predict_fn
        self._output_fn: Callable[[Any, str], Any] = default_output_fn
        self._transform_fn: Callable[[Any, bytes, str, str], Any] | None = None

    def __enter__(self) -> PythonHandlerRuntime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self, environment: Mapping[str, str]) -> None:
        """Unpack the artifact, set the environment, import the handler, and call ``model_fn``."""
        try:
            self._start(environment)
        except BaseException:
            self.close()
            raise

    def _start(self, environment: Mapping[str, str]) -> None:
        if self._local_model_dir is not None:
            self.model_dir = self._local_model_dir
        else:
            self.temp_dir = tempfile.mkdtemp(prefix="airflow-bt-model-", dir=self._temp_root)
            self.model_dir = os.path.join(self.temp_dir, "model")
            fetch_model_dir(self.model_data_url, self.model_dir, self._storage_for)
        env = {**self.model_environment, **environment}
        self._set_environment(env)
        self._default_accept = env.get("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT") or DEFAULT_ACCEPT
        code_dir = self._code_dir(env)
        program = env.get("SAGEMAKER_PROGRAM") or DEFAULT_PROGRAM
        path = os.path.realpath(os.path.join(code_dir, program))
        if os.path.dirname(path) != os.path.realpath(code_dir) or not os.path.isfile(path):
            raise ModelRuntimeError(
                f"{self.model_data_url}: no handler {program!r} in code/ "
                f"(expected code/{DEFAULT_PROGRAM} or the file named by SAGEMAKER_PROGRAM)")
        self.module = self._import(path, code_dir)

        model_fn = getattr(self.module, "model_fn", None)
        if not callable(model_fn):
            raise ModelRuntimeError(f"{self.model_data_url}: handler {program} "
                                    "defines no model_fn(model_dir)")
        transform_fn = getattr(self.module, "transform_fn", None)
        self._transform_fn = transform_fn if callable(transform_fn) else None
        self._input_fn = getattr(self.module, "input_fn", None) or default_input_fn
        self._predict_fn = getattr(self.module, "predict_fn", None) or default_predict_fn
        self._output_fn = getattr(self.module, "output_fn", None) or default_output_fn
        try:
            self.model = model_fn(self.model_dir)
        except Exception as exc:
            raise ModelRuntimeError(f"model_fn of {self.model_data_url} failed: "
                                    f"{type(exc).__name__}: {exc}") from exc
        self._loaded = True

    def _code_dir(self, env: Mapping[str, str]) -> str:
        """Where the handler is: ``code/`` of the model, or ``SAGEMAKER_SUBMIT_DIRECTORY`` fetched."""
        assert self.model_dir is not None
        if self._local_code_dir is not None:
            return self._local_code_dir
        submit = env.get(SUBMIT_DIRECTORY_ENV, "")
        if not submit.startswith(("s3://", "file://")):
            return os.path.join(self.model_dir, "code")
        if self.temp_dir is None:
            self.temp_dir = tempfile.mkdtemp(prefix="airflow-bt-code-", dir=self._temp_root)
        code_dir = os.path.join(self.temp_dir, "code")
        fetch_model_dir(submit, code_dir, self._storage_for)
        return code_dir

    def _set_environment(self, env: Mapping[str, str]) -> None:
        for key, value in env.items():
            if key not in self._saved_env:
                self._saved_env[key] = os.environ.get(key)
            os.environ[key] = value

    def _import(self, path: str, code_dir: str) -> ModuleType:
        self._sys_path_entry = code_dir
        sys.path.insert(0, code_dir)
        self._module_name = f"_airflow_bt_handler_{uuid.uuid4().hex}"
        spec = importlib.util.spec_from_file_location(self._module_name, path)
        if spec is None or spec.loader is None:  # pragma: no cover - a .py file always has a loader
            raise ModelRuntimeError(f"cannot import handler {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[self._module_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            raise ModelRuntimeError(
                f"importing handler {os.path.basename(path)} of {self.model_data_url} failed: "
                f"{type(exc).__name__}: {exc}") from exc
        return module

    def ping(self) -> bool:
        """True once ``model_fn`` has returned, until :meth:`close`."""
        return self._loaded

    def execution_parameters(self) -> dict[str, Any] | None:
        """The handler's ``execution_parameters()`` (a dict or its JSON), or ``None`` if it has none."""
        fn = getattr(self.module, "execution_parameters", None)
        if not callable(fn):
            return None
        params = fn()
        if isinstance(params, (str, bytes)):
            params = json.loads(params)
        if params is not None and not isinstance(params, dict):
            raise ModelRuntimeError(f"execution_parameters() returned {type(params).__name__}; "
                                    "expected a dict")
        return params

    def invoke(self, payload: bytes, content_type: str, accept: str) -> bytes:
        """``output_fn(predict_fn(input_fn(payload, content_type), model), accept)`` as bytes."""
        if not accept or accept == "*/*":
            accept = self._default_accept
        if self._transform_fn is not None:
            return _as_bytes(self._transform_fn(self.model, payload, content_type, accept), "transform_fn")
        result = self._output_fn(self._predict_fn(self._input_fn(payload, content_type), self.model), accept)
        return result if type(result) is bytes else _as_bytes(result, "output_fn")

    def close(self) -> None:
        """Restore the environment and ``sys.path``, forget the handler module, remove the model directory."""
        self._loaded = False
        for key, old in self._saved_env.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old
        self._saved_env = {}
        if self._sys_path_entry is not None:
            with contextlib.suppress(ValueError):
                sys.path.remove(self._sys_path_entry)
            self._sys_path_entry = None
        if self._module_name is not None:
            sys.modules.pop(self._module_name, None)
            self._module_name = None
        if self.temp_dir is not None:  # helper modules the handler imported from code/
            roots = (self.temp_dir + os.sep, os.path.realpath(self.temp_dir) + os.sep)
            for name, module in list(sys.modules.items()):
                if (getattr(module, "__file__", None) or "").startswith(roots):
                    sys.modules.pop(name, None)
        self.model = None
        if self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
            self.temp_dir = None
