"""Where a ``CreateTransformJob`` request runs.

- :mod:`airflow_bt.transform.backends.local`: the local engine, in the task's process;
- :mod:`airflow_bt.transform.backends.sagemaker`: SageMaker (AWS, or ``airflow-bt local-sagemaker``)
  through the amazon provider's ``SageMakerHook``.

Both are imported lazily, inside ``execute``.
"""

from __future__ import annotations
