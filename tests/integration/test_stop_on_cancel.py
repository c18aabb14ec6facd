"""Stop on cancel: a user who clears a deferred transform task stops its SageMaker job; a triggerer restart
does not (the job runs on, the restarted trigger attaches, the task completes). Airflow 3.3 calls the
trigger's on_kill; on Airflow 2.11 the cancelled trigger reads its task's state (no longer deferred: a user).

A real scheduler, dag-processor, triggerer and api-server on Postgres, the sagemaker backend against
`airflow-bt local-sagemaker` and a moto S3 server, a model whose requests wait for a release object.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
import yaml
from airflow_env import BIN, AirflowServices, airflow, api_healthy, free_port, wait_for

from airflow_bt.compat import AIRFLOW_V3
from integration.test_sagemaker_dag import dag_folder, env_for, s3_root

pytestmark = [pytest.mark.integration, pytest.mark.slow]
DAG_ID = "churn_nightly_scoring"
DATE = "logical_date" if AIRFLOW_V3 else "execution_date"
DAYS = ("2026-06-22", "2026-06-23", "2026-06-24")  # marked failed, cleared, under a triggerer restart

MARK_FAILED_2 = """
import sys
from airflow.api.common.mark_tasks import set_state
from airflow.models import DagBag
dag = DagBag(read_dags_from_db=False).get_dag(sys.argv[1])
set_state(tasks=[dag.get_task("transform")], run_id=sys.argv[2], state="failed", commit=True)
"""


def mark_failed(env: dict[str, str], port: int, run_id: str) -> None:
    """What the UI's "Mark as failed" does: the REST API on Airflow 3, ``set_state`` on Airflow 2."""
    import sys
    import urllib.parse
    import urllib.request

    if not AIRFLOW_V3:
        subprocess.run([sys.executable, "-c", MARK_FAILED_2, DAG_ID, run_id], env=env, check=True, timeout=120)
        return
    path = f"/api/v2/dags/{DAG_ID}/dagRuns/{urllib.parse.quote(run_id)}/taskInstances/transform"
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method="PATCH",
                                     data=json.dumps({"new_state": "failed"}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        assert answer.status == 200


def restart(services: AirflowServices, component: str) -> None:
    """SIGTERM one component, wait for it to exit, start it again (logs appended)."""
    index = next(i for i, args in enumerate(services.components) if args[0] == component)
    proc = services.procs[index]
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=60)
    log = (services.logs / f"{component}.log").open("ab")
    services.procs[index] = subprocess.Popen([str(BIN / "airflow"), *services.components[index]], env=services.env,
                                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def test_marking_failed_or_clearing_a_deferred_transform_stops_its_job_and_a_triggerer_restart_does_not(
        pg_database, sagemaker_stack, demo_root, tmp_path):
    stack = sagemaker_stack
    started = time.time()
    bucket, root = s3_root(stack, demo_root)
    s3 = stack.client("s3")
    for obj in s3.list_objects_v2(Bucket=bucket, Prefix="root/input/churn/dt=2026-06-23/")["Contents"]:
        s3.copy_object(Bucket=bucket, CopySource={"Bucket": bucket, "Key": obj["Key"]},
                       Key=obj["Key"].replace("dt=2026-06-23", "dt=2026-06-22"))  # a third day, to mark failed
    dags = dag_folder(tmp_path, gated=True)
    config = yaml.safe_load((dags / "configs/churn.yaml").read_text())
    config["max_active_runs"] = 5  # unpausing also schedules the latest closed day (no input: it waits)
    (dags / "configs/churn.yaml").write_text(yaml.safe_dump(config))
    port = free_port()
    env = env_for(stack, tmp_path / "home", root, dags, AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE="true",
                  AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=pg_database.url, AIRFLOW__CORE__EXECUTOR="LocalExecutor",
                  AIRFLOW__API__PORT=str(port),
                  AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{port}/execution/",
                  AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC="1", AIRFLOW__SCHEDULER__DAG_DIR_LIST_INTERVAL="5",
                  AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="True")  # the REST call below, as the UI makes it
    airflow(env, "db", "migrate")
    airflow(env, "dags", "reserialize")
    sm = stack.client("sagemaker")

    def transform_state(day: str) -> str | None:
        rows = pg_database.query("SELECT ti.state FROM task_instance ti JOIN dag_run dr ON dr.run_id = ti.run_id "
                                 "AND dr.dag_id = ti.dag_id WHERE ti.dag_id = %s AND ti.task_id = 'transform' "
                                 f"AND dr.{DATE}::date = %s::date", DAG_ID, day)
        return rows[0][0] if rows else None

    def run_of(day: str) -> str:
        return str(pg_database.query(f"SELECT run_id FROM dag_run WHERE dag_id = %s AND {DATE}::date = %s::date",
                                     DAG_ID, day)[0][0])

    def triggerer_of(day: str) -> int | None:
        """The id of the triggerer job that runs the deferred transform's trigger."""
        rows = pg_database.query("SELECT t.triggerer_id FROM trigger t JOIN task_instance ti ON ti.trigger_id = t.id "
                                 "JOIN dag_run dr ON dr.run_id = ti.run_id AND dr.dag_id = ti.dag_id WHERE "
                                 f"ti.dag_id = %s AND ti.task_id = 'transform' AND dr.{DATE}::date = %s::date",
                                 DAG_ID, day)
        return rows[0][0] if rows else None

    def jobs(day: str) -> dict[str, str]:
        """This test's jobs for ``day`` (the service is the session's: other tests' jobs are older)."""
        found = sm.list_transform_jobs(NameContains=f"bt-churn-{day.replace('-', '')}-", CreationTimeAfter=started,
                                       MaxResults=100)
        return {j["TransformJobName"]: j["TransformJobStatus"] for j in found["TransformJobSummaries"]}

    components = ([["api-server", "--port", str(port)], ["scheduler"], ["dag-processor"], ["triggerer"]] if AIRFLOW_V3
                  else [["scheduler"], ["triggerer"]])
    try:
        with AirflowServices(env, tmp_path / "logs", *components) as services:
            if AIRFLOW_V3:
                wait_for(lambda: api_healthy(port), "the api-server", services, timeout=120)
            airflow(env, "dags", "unpause", DAG_ID)
            for day in DAYS:
                airflow(env, "dags", "trigger", DAG_ID, "--logical-date" if AIRFLOW_V3 else "--exec-date",
                        f"{day}T00:00:00+00:00",
                        "-c", json.dumps({"backend": "sagemaker"}))
            for day in DAYS:
                wait_for(lambda d=day: transform_state(d) == "deferred" and "InProgress" in jobs(d).values(),
                         f"the transform of {day} to defer on its running job", services, timeout=240,
                         describe=lambda d=day: (transform_state(d), jobs(d)))

            # a user marks the deferred task of 2026-06-22 failed: its job is stopped
            (marked_job,) = jobs("2026-06-22")
            mark_failed(env, port, run_of("2026-06-22"))
            wait_for(lambda: jobs("2026-06-22")[marked_job] == "Stopped", "the failed task's job to be Stopped",
                     services, timeout=60, describe=lambda: jobs("2026-06-22"))

            # a user clears the deferred task of 2026-06-23: Airflow 3 stops its job; on Airflow 2 the task's
            # new try attaches to the job instead (the trigger cannot tell a clear from the new try in time)
            (first_job,) = jobs("2026-06-23")
            # (Airflow 3.3 matches -t as a substring, 2.x as a regex: only the transform task is named so)
            airflow(env, "tasks", "clear", DAG_ID, "-t", "transform", "-s", "2026-06-23", "-e", "2026-06-23", "-y")
            if AIRFLOW_V3:
                wait_for(lambda: jobs("2026-06-23")[first_job] == "Stopped", "the cleared task's job to be Stopped",
                         services, timeout=60, describe=lambda: jobs("2026-06-23"))
            else:
                wait_for(lambda: transform_state("2026-06-23") == "deferred" and triggerer_of("2026-06-23"),
                         "the cleared task's new try to defer", services, timeout=120,
                         describe=lambda: (transform_state("2026-06-23"), jobs("2026-06-23")))
                assert jobs("2026-06-23") == {first_job: "InProgress"}

            # the triggerer restarts under the deferred task of 2026-06-24: its job runs on
            (running,) = jobs("2026-06-24")
            before = triggerer_of("2026-06-24")
            restart(services, "triggerer")
            wait_for(lambda: triggerer_of("2026-06-24") not in (None, before),
                     "the restarted triggerer to take the trigger over", services, timeout=120,
                     describe=lambda: (before, triggerer_of("2026-06-24")))
            assert jobs("2026-06-24") == {running: "InProgress"} and transform_state("2026-06-24") == "deferred"
            s3.put_object(Bucket=bucket, Key="root/release", Body=b"")  # let the jobs finish
            wait_for(lambda: transform_state("2026-06-24") == "success", "the transform of 2026-06-24 to succeed",
                     services, timeout=240, describe=lambda: (transform_state("2026-06-24"), jobs("2026-06-24")))
            assert jobs("2026-06-24") == {running: "Completed"}  # the same job, attached to, not a second one
    finally:
        s3.put_object(Bucket=bucket, Key="root/release", Body=b"")  # never leave a held job in the service
    # the trigger's own lines are in the task logs (Airflow 3 writes a trigger's log to its task's)
    logs = "".join(p.read_text(errors="replace") for p in (tmp_path / "home" / "logs").rglob("*") if p.is_file())
    for stopped in (marked_job, first_job) if AIRFLOW_V3 else (marked_job,):
        assert f"stopping transform job {stopped}: its deferred task was stopped by a user" in logs
    assert f"stopping transform job {running}" not in logs
