"""The pipeline's steps as plain functions over storage (no Airflow): shard, publish."""
