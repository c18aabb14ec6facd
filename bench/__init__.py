"""Benchmarks of airflow_bt (``make bench``); see bench/README.md."""
