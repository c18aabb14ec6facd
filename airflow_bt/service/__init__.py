"""``airflow-bt local-sagemaker``: a small SageMaker-compatible service over the local engine.

It speaks the SageMaker API's own protocol (AWS JSON 1.1, ``X-Amz-Target: SageMaker.<Action>``)
for the model and transform-job actions, so boto3, the amazon provider's operators and
airflow_bt's operators reach it by setting the ``sagemaker`` endpoint URL. Jobs run in
background worker processes on the local engine and read and write S3 through boto3's
standard configuration (``AWS_ENDPOINT_URL_S3``: MinIO, a moto server, or AWS).

- :mod:`~airflow_bt.service.server`: the HTTP server and the ``serve`` entry point;
- :mod:`~airflow_bt.service.api`: the actions and their in-memory state;
- :mod:`~airflow_bt.service.runner`: one job's worker process (start, stop, outcome, its output lines);
- :mod:`~airflow_bt.service.joblogs`: the jobs' logs, in CloudWatch Logs (``/aws/sagemaker/TransformJobs``)
  when an endpoint is configured, and in memory (``GET /logs/<job name>``);
- :mod:`~airflow_bt.service.worker`: the worker process's entry point;
- :mod:`~airflow_bt.service.errors`: the API's error shapes.
"""

from __future__ import annotations
