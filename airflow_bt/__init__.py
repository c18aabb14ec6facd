"""airflow_bt: offline batch scoring with SageMaker Batch Transform, from Apache Airflow."""

from __future__ import annotations

__version__ = "0.1.0"
