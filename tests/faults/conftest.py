"""Fixtures shared by the fault tests (tests/faults)."""

from __future__ import annotations

from pathlib import Path

import pytest
from integration.conftest import pg_database  # noqa: F401 - the same throw-away PostgreSQL database fixture

from airflow_bt.demo.data import generate_range
from airflow_bt.demo.model import train_model

#: The day the shared fault input is generated for; tests copy its files to other days as they need.
FAULT_DS = "2026-06-24"


@pytest.fixture(scope="session")
def fault_source(tmp_path_factory) -> Path:
    """Demo input for one day, 3,000 rows in 3 files (``input/churn/dt=2026-06-24/``), and a small model
    (``models/churn/``). Read-only: copy what a test changes."""
    root = tmp_path_factory.mktemp("fault-source")
    generate_range(str(root), "churn", FAULT_DS, FAULT_DS, rows=3000, files=3)
    train_model(str(root / "models" / "churn"), rows=3000)
    return root
