"""Layer 3, transform jobs: the ``CreateTransformJob`` request shape, its validator, and the local engine.

Pure Python (no Airflow). The engine is imported lazily:
``from airflow_bt.transform.local_engine import run_transform_job``.
"""

from __future__ import annotations

from airflow_bt.transform.spec import TransformSpecError, validate_model_request, validate_transform_request

__all__ = ["TransformSpecError", "validate_model_request", "validate_transform_request"]
