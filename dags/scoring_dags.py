"""Nightly scoring DAGs: one per YAML file in ``dags/configs/`` (see README, "DAG config reference").

The data root is ``$AIRFLOW_BT_ROOT`` if set, else the config's ``root_uri``, else the
repository's ``demo-data/`` folder. Only light modules are imported here: the engine, boto3
and pandas load inside the tasks.
"""

from __future__ import annotations

from pathlib import Path

from airflow_bt.dag_factory.factory import build_dags

_HERE = Path(__file__).resolve().parent

globals().update(build_dags(_HERE / "configs", default_root=(_HERE.parent / "demo-data").as_uri()))
