"""How a job's ``Environment`` is shown wherever it is described: secret-named values as ``***``.

One rule for ``airflow-bt local-sagemaker``'s ``Describe*`` answers, the local backend's job records and
the comparison of a request with a described job (which must mask both sides alike). The rule is
Airflow's own (:func:`airflow_bt.compat.is_sensitive_name`), imported on first use so the service
starts without Airflow.
"""

from __future__ import annotations

import copy
from typing import Any

MASKED = "***"


def masked_environment(environment: Any) -> Any:
    """A copy of an ``Environment`` mapping with the values of secret-named variables replaced by ``***``."""
    if not isinstance(environment, dict):
        return copy.deepcopy(environment)
    from airflow_bt.compat import is_sensitive_name  # Airflow's rule, as the task logs apply it

    return {name: MASKED if isinstance(value, str) and value and is_sensitive_name(name) else copy.deepcopy(value)
            for name, value in environment.items()}


def masked_secrets(job: dict[str, Any]) -> dict[str, Any]:
    """A copy of a request or description whose top-level ``Environment`` is :func:`masked_environment`."""
    out = copy.deepcopy(job)
    if "Environment" in out:
        out["Environment"] = masked_environment(out["Environment"])
    return out
