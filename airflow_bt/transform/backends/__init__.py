"""Where a ``CreateTransformJob`` request runs: one interface, two implementations.

- :class:`~airflow_bt.transform.backends.base.TransformBackend`: ensure the model, create a job,
  describe it, stop it, wait for it, name this run's jobs;
- :mod:`airflow_bt.transform.backends.sagemaker`: SageMaker (AWS, or ``airflow-bt local-sagemaker``)
  through :class:`~airflow_bt.hooks.transform_job.TransformJobHook`;
- :mod:`airflow_bt.transform.backends.local_jobs`: the local engine in the task's process, its jobs
  described like SageMaker's from records beside their output.

Both are imported lazily, inside ``execute``.
"""

from __future__ import annotations
