"""The one place that knows Airflow 2 from Airflow 3: everything else imports from here."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow import __version__ as AIRFLOW_VERSION

AIRFLOW_V3 = int(AIRFLOW_VERSION.split(".", 1)[0]) >= 3

if TYPE_CHECKING:
    from airflow.sdk import DAG, BaseHook, BaseOperator, BaseOperatorLink, BaseSensorOperator, Param
    from airflow.sdk import Asset as Asset
    from airflow.sdk.definitions.context import Context
    from airflow.sdk.exceptions import AirflowException, AirflowFailException
else:
    # The common-compat provider maps each name to its home on the running Airflow line (3.x: the Task
    # SDK; 2.x: airflow.models & co). Measured with python -X importtime: importing it after Airflow
    # itself costs 0-1 ms and pulls in nothing heavy, so it stands in for our own version switch.
    from airflow.providers.common.compat.sdk import (
        DAG,
        AirflowException,
        AirflowFailException,
        Asset,
        BaseHook,
        BaseOperator,
        BaseOperatorLink,
        BaseSensorOperator,
        Context,
        Param,
    )


def try_number(context: Context) -> int:
    """The attempt number of the running task instance, starting at 1 on both Airflow lines."""
    return int(context["ti"].try_number)


def run_id(context: Context) -> str:
    return str(context["run_id"])


__all__ = [
    "AIRFLOW_V3",
    "AIRFLOW_VERSION",
    "DAG",
    "AirflowException",
    "AirflowFailException",
    "Asset",
    "BaseHook",
    "BaseOperator",
    "BaseOperatorLink",
    "BaseSensorOperator",
    "Context",
    "Param",
    "run_id",
    "try_number",
]


def is_sensitive_name(name: str) -> bool:
    """Whether a variable's value must never be shown: Airflow's own rule (``*TOKEN*``, ``*PASSWORD*``,
    ``*SECRET*``, ..., and ``[core] sensitive_var_conn_names``), the one the task logs apply."""
    if AIRFLOW_V3:
        from airflow.sdk._shared.secrets_masker import should_hide_value_for_key
    else:  # pragma: no cover - exercised by the Airflow 2 environment
        from airflow.utils.log.secrets_masker import should_hide_value_for_key  # type: ignore[no-redef]
    return bool(should_hide_value_for_key(name))  # type: ignore[no-untyped-call]


def mask_sensitive_values(environment: dict[str, str] | None) -> int:
    """Register the values of sensitive-named variables (:func:`is_sensitive_name`) with Airflow's
    secrets masker, so no task log line shows them; returns how many were registered."""
    from airflow.providers.common.compat.sdk import mask_secret
    count = 0
    for name, value in (environment or {}).items():
        if isinstance(value, str) and value and is_sensitive_name(name):
            mask_secret(value, name)
            count += 1
    return count
