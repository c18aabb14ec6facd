"""Retention of scratch: which run folders go, on file:// and on (moto) S3, and that output/ is never touched."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import pytest

from airflow_bt.cli import main as cli_main
from airflow_bt.steps.retention import apply_retention, model_roots, parse_age, plan_retention
from airflow_bt.storage import for_uri
from airflow_bt.storage.uris import join_uri

DAY = 86400.0


def build(store, root: str) -> None:
    """Four run folders and two published days (2026-06-20, 2026-06-22)."""
    work = f"{root}/work/churn"
    for run, day in (("run-a", "2026-06-20"), ("run-b", "2026-06-20"), ("run-c", "2026-06-21"),
                     ("run-d", "2026-06-22")):
        store.put_bytes(f"{work}/dt={day}/{run}/shard-1/part-00000.csv", b"1,2\n")
        store.put_bytes(f"{work}/dt={day}/{run}/transform/job-1.job.json", b"{}")
        if run != "run-d":  # run-d's local job has no end record: it may be running
            store.put_bytes(f"{work}/dt={day}/{run}/transform/job-1.end.json", b"{}")
    for day in ("2026-06-20", "2026-06-22"):
        attempt = f"{root}/output/churn/dt={day}/run-a-1/"
        store.put_bytes(join_uri(attempt, "part-00000.csv"), b"id,p\n1,0.5\n")
        store.put_bytes(join_uri(attempt, "_SUCCESS"), b"")
        store.put_bytes(f"{root}/output/churn/dt={day}/_LATEST.json",
                        json.dumps({"attempt_prefix": attempt}).encode())
    store.put_bytes(f"{root}/output/churn/dt=2026-06-21/run-c-1/part-00000.csv", b"id,p\n")  # no _SUCCESS


def decisions(folders) -> dict[str, bool]:
    return {f.prefix.rstrip("/").rsplit("/", 1)[1]: f.delete for f in folders}


@pytest.fixture(params=["file", "s3"])
def root(request, tmp_path):
    if request.param == "file":
        return tmp_path.as_uri() + "/data"
    return request.getfixturevalue("s3_bucket") + "/data"


def test_only_old_folders_of_published_days_without_running_jobs_go(root):
    store = for_uri(root, aws_conn_id=None)
    build(store, root)
    work, output = model_roots(root, "churn")
    assert all(not f.delete for f in plan_retention(store, work, output, 14 * DAY))  # all written just now
    later = time.time() + 20 * DAY
    folders = plan_retention(store, work, output, 14 * DAY, now=later)
    assert decisions(folders) == {"run-a": True, "run-b": True, "run-c": False, "run-d": False}
    reasons = {f.prefix.rstrip("/").rsplit("/", 1)[1]: f.reason for f in folders}
    assert "no complete publication" in reasons["run-c"] and "may be running" in reasons["run-d"]
    before = sorted(o.key for o in store.list(output))
    done = apply_retention(store, folders, logging.getLogger("test"))
    assert done["folders"] == 2 and done["objects"] == 6
    left = sorted(o.key for o in store.list(work))
    assert all(k.startswith(("dt=2026-06-21/run-c/", "dt=2026-06-22/run-d/")) for k in left) and len(left) == 5
    assert sorted(o.key for o in store.list(output)) == before  # output/ untouched


def built_and_aged(tmp_path: Path, folder: str) -> tuple[str, object]:
    """:func:`build` on file://, with everything under ``folder`` last written 30 days ago."""
    root = tmp_path.as_uri()
    store = for_uri(root)
    build(store, root)
    old = time.time() - 30 * DAY
    for path in (tmp_path / folder).rglob("*"):
        os.utime(path, (old, old))
    return root, store


def test_a_run_folder_written_recently_is_kept(tmp_path):
    root, store = built_and_aged(tmp_path, "work/churn/dt=2026-06-20/run-a")
    folders = plan_retention(store, *model_roots(root, "churn"), 14 * DAY)
    assert decisions(folders)["run-a"] is True and decisions(folders)["run-b"] is False
    assert "last written 0.0 day(s) ago" in next(f.reason for f in folders if "run-b" in f.prefix)


def test_the_cli_is_a_dry_run_unless_told(tmp_path, capsys):
    root, _ = built_and_aged(tmp_path, "work")
    assert cli_main(["gc", root, "--model", "churn", "--older-than", "14d"]) == 0
    out = capsys.readouterr()
    assert out.out.count("delete  ") == 2 and "dry run: nothing deleted" in out.err
    assert (tmp_path / "work/churn/dt=2026-06-20/run-a").is_dir()
    assert cli_main(["gc", root, "--model", "churn", "--older-than", "14d", "--apply"]) == 0
    assert "deleted 2 run folder(s), 6 object(s)" in capsys.readouterr().err
    assert not (tmp_path / "work/churn/dt=2026-06-20").exists()  # emptied folders go too
    assert (tmp_path / "work/churn/dt=2026-06-21/run-c/shard-1/part-00000.csv").exists()
    assert (tmp_path / "output/churn/dt=2026-06-20/run-a-1/_SUCCESS").exists()
    assert cli_main(["gc", root, "--model", "churn", "--older-than", "two weeks"]) == 2


def test_ages_parse():
    assert parse_age("14d") == 14 * DAY and parse_age("36h") == 36 * 3600 and parse_age("90m") == 5400
    with pytest.raises(ValueError, match="expected an age"):
        parse_age("14")


def test_s3_deletes_in_batches_of_a_thousand(s3_bucket):
    store = for_uri(s3_bucket, aws_conn_id=None)
    uris = [f"{s3_bucket}/work/m/dt=2026-06-20/r/{i:05d}" for i in range(2001)]
    for uri in uris[:5]:
        store.put_bytes(uri, b"x")
    import boto3

    client = boto3.client("s3")
    for i in range(5, 2001):
        client.put_object(Bucket="bucket-a", Key=uris[i].removeprefix(f"{s3_bucket}/"), Body=b"x")
    calls: list[int] = []
    store.__dict__["client"] = client
    client.meta.events.register("before-call.s3.DeleteObjects", lambda params, **_: calls.append(1))
    store.delete_objects(uris)
    assert len(calls) == 3 and not store.has_objects(f"{s3_bucket}/work/")


def test_retention_settings_make_a_final_task(tmp_path: Path):
    from airflow_bt.dag_factory.config import ConfigError, load_config
    from airflow_bt.dag_factory.factory import build_dag

    good = ("dag_id: d1\nmodel: churn\nstart_date: 2026-06-01\ntransform:\n  model_name: m\n"
            "retention:\n  work_days: 14\n")
    (tmp_path / "c.yaml").write_text(good)
    dag = build_dag(load_config(tmp_path / "c.yaml"), default_root=tmp_path.as_uri())
    task = dag.get_task("retention")
    assert task.upstream_task_ids == {"publish"} and task.work_days == 14
    assert task.work_root == "{{ params.root_uri }}/work/churn/"
    (tmp_path / "c.yaml").write_text(good + "paths:\n  work: '{{ params.root_uri }}/scratch/{{ ds }}/'\n")
    with pytest.raises(ConfigError, match=r"setting `retention.work_days`: retention needs paths.work"):
        load_config(tmp_path / "c.yaml")
