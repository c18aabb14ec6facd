"""A model created from a SageMaker Model Registry package, for the backends that run the model themselves.

SageMaker's ``CreateModel`` takes ``PrimaryContainer.ModelPackageName`` (a package name or ARN) instead of
an ``Image`` and a ``ModelDataUrl``: the package's inference specification names both. The local engine
and ``airflow-bt local-sagemaker`` run the container themselves, so they resolve the package first, with
``DescribeModelPackage`` (through the AWS connection, or the service's own registry), into the container
SageMaker would run: the package's first container, its ``Environment`` overlaid by the model's own.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

from airflow_bt.transform.spec import TransformSpecError

#: ``DescribeModelPackage`` for one package name or ARN.
DescribePackage = Callable[[str], Mapping[str, Any]]


def package_of(model_request: Mapping[str, Any]) -> str | None:
    """The ``ModelPackageName`` the request's container names, if any."""
    container = model_request.get("PrimaryContainer") or {}
    name = container.get("ModelPackageName")
    return str(name) if name else None


def resolve_model_package(model_request: Mapping[str, Any], describe: DescribePackage) -> dict[str, Any]:
    """``model_request`` with its container taken from the package it names (unchanged if it names none).

    Raises :class:`TransformSpecError` naming ``PrimaryContainer.ModelPackageName`` for a package that
    cannot be described or has no single container to run."""
    resolved = copy.deepcopy(dict(model_request))
    name = package_of(model_request)
    if name is None:
        return resolved
    field = "PrimaryContainer.ModelPackageName"
    try:
        package = describe(name)
    except Exception as exc:
        raise TransformSpecError(field, f"model package {name!r} could not be described: "
                                        f"{type(exc).__name__}: {exc}") from exc
    containers = (package.get("InferenceSpecification") or {}).get("Containers") or []
    if len(containers) != 1:
        raise TransformSpecError(field, f"model package {name!r} has {len(containers)} inference containers; "
                                        "one is supported")
    status = package.get("ModelPackageStatus")
    if status not in (None, "Completed"):
        raise TransformSpecError(field, f"model package {name!r} is {status}, not Completed")
    spec = containers[0]
    container: dict[str, Any] = {"Image": spec["Image"]}
    if spec.get("ModelDataUrl"):
        container["ModelDataUrl"] = spec["ModelDataUrl"]
    environment = {**(spec.get("Environment") or {}), **(model_request["PrimaryContainer"].get("Environment") or {})}
    if environment:
        container["Environment"] = environment
    resolved["PrimaryContainer"] = container
    return resolved
