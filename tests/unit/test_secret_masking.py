"""Values of sensitive-named variables in a job's environments are masked in task logs.

Runs in a fresh interpreter with the task log's masking set up as Airflow sets it up for tasks
(Airflow 3: the SDK's structlog processors; Airflow 2: the secrets-masker filter, switched on as
`airflow tasks run` switches it on).
"""

from __future__ import annotations

import subprocess
import sys

SCRIPT = r"""
import logging, sys
from airflow_bt.compat import AIRFLOW_V3, mask_sensitive_values
if AIRFLOW_V3:
    from airflow.sdk.log import configure_logging
    configure_logging(output=sys.stdout)
else:
    from airflow import settings
    from airflow.utils.log.secrets_masker import _secrets_masker
    settings.MASK_SECRETS_IN_LOGS = True  # as `airflow tasks run` sets it for a task
    handler = logging.StreamHandler(sys.stdout)
    handler.addFilter(_secrets_masker())
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
if sys.argv[1] == "mask":
    print("registered", mask_sensitive_values({"DB_PASSWORD": "pw-Zm4Kc8Wd1N", "REGION": "eu-west-1",
                                               "API_TOKEN": "tok-7Hq2xVb9Lr"}), flush=True)
logging.getLogger("model").warning("password pw-Zm4Kc8Wd1N token tok-7Hq2xVb9Lr region eu-west-1")
"""


def run(mode: str) -> str:
    proc = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True,
                          timeout=120)
    return proc.stdout


def test_sensitive_environment_values_are_masked_in_task_logs():
    out = run("mask")
    assert "registered 2" in out
    assert "password *** token *** region eu-west-1" in out
    assert "pw-Zm4Kc8Wd1N" not in out and "tok-7Hq2xVb9Lr" not in out


def test_without_registration_the_values_would_show():
    assert "password pw-Zm4Kc8Wd1N token tok-7Hq2xVb9Lr" in run("plain")
