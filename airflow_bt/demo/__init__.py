"""Demo data and model for airflow_bt: a synthetic customer-churn dataset and a churn model.

- :func:`airflow_bt.demo.data.generate_partition` / :func:`~airflow_bt.demo.data.generate_range`
  write daily scoring input (``<root>/input/<model>/dt=<ds>/customers-NNNN.csv``);
- :func:`airflow_bt.demo.model.train_model` trains the scikit-learn model and packs a SageMaker
  ``model.tar.gz`` whose handler is ``airflow_bt/demo/handler/inference.py``.

Command line: ``python -m airflow_bt.demo data|model --help``. This package module imports
nothing heavy; numpy, pandas and scikit-learn load with the submodules.
"""

from __future__ import annotations
