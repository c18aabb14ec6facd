"""Settings the docker-compose stack relies on: ``$AIRFLOW_BT_BACKEND`` and the demo days minio-init loads."""

from __future__ import annotations

import datetime as dt
import importlib.util
import sys
from types import ModuleType

import pytest
from airflow_env import REPO

from airflow_bt.dag_factory.factory import BACKEND_ENV, resolve_backend


def _stack_init() -> ModuleType:
    spec = importlib.util.spec_from_file_location("stack_init", REPO / "scripts" / "stack_init.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("stack_init", module)
    spec.loader.exec_module(module)
    return module


def test_backend_env_overrides_the_config_default(monkeypatch):
    config = {"transform": {"backend": "local"}}
    monkeypatch.delenv(BACKEND_ENV, raising=False)
    assert resolve_backend(config) == "local"
    monkeypatch.setenv(BACKEND_ENV, "sagemaker")
    assert resolve_backend(config) == "sagemaker"
    monkeypatch.setenv(BACKEND_ENV, "emr")
    with pytest.raises(ValueError, match="AIRFLOW_BT_BACKEND must be 'local' or 'sagemaker'"):
        resolve_backend(config)


def test_demo_days_are_the_range_plus_the_days_before_today():
    stack_init = _stack_init()
    today = dt.date(2026, 11, 21)
    assert stack_init.demo_days("2026-06-22", "2026-06-24", 2, today=today) == [
        "2026-06-22", "2026-06-23", "2026-06-24", "2026-11-19", "2026-11-20"]
    assert stack_init.demo_days("2026-11-19", "2026-11-20", 2, today=today) == ["2026-11-19", "2026-11-20"]
    assert stack_init.demo_days("2026-06-24", "2026-06-24", 0, today=today) == ["2026-06-24"]
    with pytest.raises(SystemExit):
        stack_init.demo_days("2026-06-24", "2026-06-22", 0, today=today)
    assert stack_init.split_s3_uri("s3://airflow-bt/scoring/") == ("airflow-bt", "scoring")
