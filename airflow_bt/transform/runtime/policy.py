"""What the local engine may do for a request's sender: which URIs it opens, which models it runs, where.

Inside an Airflow task (and ``airflow-bt local-transform``) the request is the user's own configuration,
so everything is allowed and a Python handler runs in the engine's process (:data:`EMBEDDED`).
``airflow-bt local-sagemaker`` runs requests from anyone who can reach its port, so it allows
``file://`` URIs, serve commands, Python handler models (user code) and model containers off loopback
only when started with ``--allow-file-uris`` / ``--allow-serve-commands`` / ``--allow-model-code`` /
``--allow-remote-model-urls``; and an allowed handler runs in a child process started with the
container environment, never in the engine's (``isolate_model_code``), so it cannot read the service's
credentials.

The engine consults one :class:`EnginePolicy` at two shared spots, so no code path can forget it:

- every storage lookup (:meth:`EnginePolicy.guard` wraps the engine's ``storage_for``): the input
  prefix or manifest, each manifest's ``prefix``, each input and ``.out`` object, the model artifact
  (``ModelDataUrl``), the code in ``SAGEMAKER_SUBMIT_DIRECTORY``, dead-letter objects;
- before a model runtime is opened (:meth:`EnginePolicy.check_model`): a serve command, a Python
  handler, an ``http(s)://`` ``Image`` whose host is not loopback (``127.0.0.0/8``, ``::1``,
  ``localhost``; the URL's host as written, not resolved) are refused unless allowed.

:meth:`EnginePolicy.check_request` refuses, before anything runs, what the requests name directly
(the service answers that as ``ValidationException``); URIs found later (a manifest's ``prefix``) fail
the job with a :class:`PolicyError` naming the URI.

>>> strict = EnginePolicy(allow_file_uris=False, file_uris_opt_in="use --allow-file-uris")
>>> strict.check_uri("s3://bucket/in/")
>>> strict.check_uri("file:///etc/passwd")
Traceback (most recent call last):
...
airflow_bt.transform.runtime.policy.PolicyError: 'file:///etc/passwd' must be an s3:// URI (use --allow-file-uris)
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

from airflow_bt.transform.runtime.base import StorageResolver
from airflow_bt.transform.runtime.http import is_http_url
from airflow_bt.transform.runtime.python_handler import SUBMIT_DIRECTORY_ENV
from airflow_bt.transform.runtime.serve import SERVE_COMMAND_ENV, serve_command_of
from airflow_bt.transform.spec import TransformSpecError


class PolicyError(PermissionError):
    """The engine's policy refuses to open a URI or to run a serve command."""


def runtime_kind(model_request: Mapping[str, Any]) -> str:
    """``"http"``, ``"serve"`` or ``"python"``: which runtime serves this ``CreateModel`` request."""
    container = model_request.get("PrimaryContainer") or {}
    if is_http_url(container.get("Image")):
        return "http"
    if serve_command_of(model_request) is not None:
        return "serve"
    return "python"


def is_loopback_url(url: str) -> bool:
    """Whether an ``http(s)://`` URL's host, as written, is this machine: ``localhost``, ``127.0.0.0/8``, ``::1``.

    >>> [is_loopback_url(u) for u in ("http://127.0.0.1:8080", "http://[::1]:1", "http://LocalHost", "http://10.0.0.1")]
    [True, True, True, False]
    """
    host = (urlsplit(str(url)).hostname or "").rstrip(".").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _uris(found: list[tuple[str, Any]]) -> list[tuple[str, str]]:
    return [(name, value) for name, value in found if isinstance(value, str) and "://" in value]


def model_uris(model_request: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(field, uri)`` for every URI a ``CreateModel`` request names: the artifact, the submit directory."""
    container = model_request.get("PrimaryContainer") or {}
    found: list[tuple[str, Any]] = [("PrimaryContainer.ModelDataUrl", container.get("ModelDataUrl"))]
    env = container.get("Environment") or {}
    found.append((f"PrimaryContainer.Environment.{SUBMIT_DIRECTORY_ENV}", env.get(SUBMIT_DIRECTORY_ENV)))
    return _uris(found)


def request_uris(request: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(field, uri)`` for every URI a ``CreateTransformJob`` request names directly."""
    found: list[tuple[str, Any]] = [
        ("TransformInput.DataSource.S3DataSource.S3Uri",
         ((request.get("TransformInput") or {}).get("DataSource") or {}).get("S3DataSource", {}).get("S3Uri")),
        ("TransformOutput.S3OutputPath", (request.get("TransformOutput") or {}).get("S3OutputPath")),
        (f"Environment.{SUBMIT_DIRECTORY_ENV}", (request.get("Environment") or {}).get(SUBMIT_DIRECTORY_ENV)),
        ("DataCaptureConfig.DestinationS3Uri", (request.get("DataCaptureConfig") or {}).get("DestinationS3Uri")),
    ]
    return _uris(found)


@dataclass(frozen=True)
class EnginePolicy:
    """What the engine may do; picklable and JSON-able (it travels to worker processes).

    :param allow_file_uris: open ``file://`` URIs (else only ``s3://``).
    :param allow_serve_commands: start a model's ``AIRFLOW_BT_SERVE_COMMAND``.
    :param allow_model_code: run a Python handler model (``code/inference.py``, ``SAGEMAKER_PROGRAM``).
    :param isolate_model_code: run a Python handler in a child process with the container environment
        (:mod:`~airflow_bt.transform.runtime.handler_server`), not in the engine's process.
    :param allow_remote_model_urls: call a model container (``http(s)://`` ``Image``) off loopback.
    :param file_uris_opt_in: how to allow ``file://`` URIs, quoted when one is refused.
    :param serve_commands_opt_in: how to allow serve commands, quoted when one is refused.
    :param model_code_opt_in: how to allow Python handler models, quoted when one is refused.
    :param remote_model_urls_opt_in: how to allow remote model containers, quoted when one is refused.
    """

    allow_file_uris: bool = True
    allow_serve_commands: bool = True
    allow_model_code: bool = True
    isolate_model_code: bool = False
    allow_remote_model_urls: bool = True
    file_uris_opt_in: str = "file:// URIs are not allowed here"
    serve_commands_opt_in: str = "serve commands are not allowed here"
    model_code_opt_in: str = "Python handler models are not allowed here"
    remote_model_urls_opt_in: str = "model containers off loopback are not allowed here"

    def check_uri(self, uri: str) -> None:
        """Raise :class:`PolicyError` unless the engine may open ``uri``."""
        if self.allow_file_uris:
            return
        if urlsplit(str(uri)).scheme.lower() != "s3":
            raise PolicyError(f"{uri!r} must be an s3:// URI ({self.file_uris_opt_in})")

    def guard(self, storage_for: StorageResolver) -> StorageResolver:
        """``storage_for`` that first checks every URI it is asked for."""
        if self.allow_file_uris:
            return storage_for

        def guarded(uri: str) -> Any:
            self.check_uri(uri)
            return storage_for(uri)

        return guarded

    def check_model(self, model_request: Mapping[str, Any]) -> None:
        """Raise :class:`TransformSpecError` if the model is one the engine may not run."""
        kind = runtime_kind(model_request)
        if not self.allow_serve_commands and kind == "serve":
            raise TransformSpecError(f"PrimaryContainer.Environment.{SERVE_COMMAND_ENV}",
                                     f"serve commands are not run by this engine ({self.serve_commands_opt_in})")
        if not self.allow_model_code and kind == "python":
            raise TransformSpecError(
                "PrimaryContainer.ModelDataUrl",
                "names a Python handler model (code/inference.py or SAGEMAKER_PROGRAM in the artifact): that is "
                f"user-supplied code, and this engine does not run it ({self.model_code_opt_in})")
        image = (model_request.get("PrimaryContainer") or {}).get("Image")
        if not self.allow_remote_model_urls and kind == "http" and not is_loopback_url(str(image)):
            raise TransformSpecError(
                "PrimaryContainer.Image",
                f"{image!r} is a model container off loopback (not localhost, 127.0.0.0/8 or ::1): this engine "
                f"does not send input data there ({self.remote_model_urls_opt_in})")
        self._check_uris(model_uris(model_request))

    def check_request(self, request: Mapping[str, Any], model_request: Mapping[str, Any]) -> None:
        """Raise :class:`TransformSpecError` for what the requests name directly and the policy refuses."""
        self.check_model(model_request)
        self._check_uris(request_uris(request))

    def _check_uris(self, named: list[tuple[str, str]]) -> None:
        for name, uri in named:
            try:
                self.check_uri(uri)
            except PolicyError as exc:
                raise TransformSpecError(name, str(exc)) from None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any] | None) -> EnginePolicy:
        return cls(**dict(doc or {}))


EMBEDDED = EnginePolicy()
"""Everything allowed: the request is the user's own (an Airflow task, ``airflow-bt local-transform``)."""
