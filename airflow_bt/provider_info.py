"""Airflow provider metadata, found through the ``apache_airflow_provider`` entry point."""

from __future__ import annotations

from typing import Any

from airflow_bt import __version__


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-bt",
        "name": "airflow_bt",
        "description": "Offline batch scoring with SageMaker Batch Transform: shard, transform, publish.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "airflow_bt batch scoring",
                "external-doc-url": "https://docs.aws.amazon.com/sagemaker/latest/dg/batch-transform.html",
                "tags": ["aws"],
            }
        ],
        "operators": [
            {
                "integration-name": "airflow_bt batch scoring",
                "python-modules": [
                    "airflow_bt.operators.shard",
                    "airflow_bt.operators.transform",
                    "airflow_bt.operators.postprocess",
                ],
            }
        ],
        "sensors": [
            {"integration-name": "airflow_bt batch scoring",
             "python-modules": ["airflow_bt.sensors.input", "airflow_bt.sensors.transform_job"]}
        ],
        "triggers": [
            {"integration-name": "airflow_bt batch scoring", "python-modules": ["airflow_bt.triggers.transform_job"]}
        ],
        "extra-links": ["airflow_bt.links.sagemaker.TransformJobLink",
                        "airflow_bt.links.sagemaker.TransformJobLogsLink"],
        "hooks": [
            {"integration-name": "airflow_bt batch scoring", "python-modules": ["airflow_bt.hooks.storage"]}
        ],
        "plugins": [{"name": "airflow_bt", "plugin-class": "airflow_bt.plugins.AirflowBtPlugin"}],
    }
