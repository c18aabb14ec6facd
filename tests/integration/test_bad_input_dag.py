"""Bad input and secrets through the nightly DAG (``airflow dags test``): what a user sees in the run.

- a ragged row fails the shard task naming the file, line and setting; nothing is published and
  no transform job runs;
- with ``shard.on_bad_record: quarantine`` the good rows are published and the bad ones land in
  the attempt's ``_errors/bad-input.jsonl``;
- an empty-but-present partition publishes an empty result without starting a job;
- values of sensitive-named Variables used in the job's environments appear in no XCom, no
  rendered field and no file the run writes. (Task-log masking is pinned by
  tests/unit/test_secret_masking.py: ``dags test`` prints task logs to its console without
  Airflow's secrets masker, whatever the DAG does.)
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest
from airflow_env import airflow, airflow_env
from data_helpers import copy_demo, corrupt_tenure, dag_folder
from table_checks import assert_pointers_agree, read_parts

pytestmark = pytest.mark.integration
DS = "2026-06-24"


def run_dag(airflow_home: Path, data: Path, folder: Path, **env: str):
    proc = airflow(airflow_env(airflow_home, data, AIRFLOW__CORE__DAGS_FOLDER=str(folder), **env),
                   "dags", "test", "churn_nightly_scoring", DS, check=False)
    (folder.parent / "dags-test.log").write_text(proc.stdout + proc.stderr)  # kept for a failing test's reader
    return proc, proc.stdout + proc.stderr


def published(data: Path) -> tuple[dict, list[str]]:
    """The published attempt's manifest and its rows' customer ids, in order (the parts are typed Parquet)."""
    latest = json.loads((data / f"output/churn/dt={DS}/_LATEST.json").read_text())
    manifest = json.loads(Path(latest["manifest"].removeprefix("file://")).read_text())
    attempt = Path(latest["attempt_prefix"].removeprefix("file://"))
    assert (attempt / "_SUCCESS").exists()
    rows = read_parts(attempt)
    return manifest, rows.column("customer_id").to_pylist() if rows.num_rows else []


def ids(rows: list[str]) -> list[str]:
    return [row.split(",", 1)[0] for row in rows]


def input_rows(data: Path) -> list[str]:
    return [line for path in sorted((data / f"input/churn/dt={DS}").glob("*.csv"))
            for line in path.read_text().splitlines()[1:]]


def test_ragged_row_fails_the_shard_task_and_nothing_runs_after_it(airflow_home, demo_root, tmp_path):
    data = copy_demo(demo_root, tmp_path)
    victim = data / f"input/churn/dt={DS}/customers-0002.csv"
    lines = victim.read_text().splitlines(keepends=True)
    offset = sum(len(line.encode()) for line in lines[:6])
    lines[6] = lines[6].rsplit(",", 1)[0] + "\n"  # line 7 loses its last field
    victim.write_text("".join(lines))
    proc, log = run_dag(airflow_home, data, dag_folder(tmp_path, shard={"validation": "standard"}))
    assert proc.returncode != 0
    assert (f"customers-0002.csv line 7 (byte offset {offset}): 11 field(s), but the header has 12; "
            "fix the input upstream, or set `shard.on_bad_record: quarantine`") in log
    assert not (data / "output").exists()
    assert not list((data / "work").rglob("transform")), "the transform ran after a failed shard step"


def test_quarantine_publishes_the_good_rows_and_lists_the_bad_ones(airflow_home, demo_root, tmp_path):
    data = copy_demo(demo_root, tmp_path)
    folder = data / f"input/churn/dt={DS}"
    good = input_rows(data)
    a = folder / "customers-0001.csv"
    a.write_bytes(a.read_bytes() + b"C1,2024-01-01,basic,us-west,1,2\n")  # ragged
    b = folder / "customers-0003.csv"
    b.write_bytes(b.read_bytes() + b"C2,2024-01-01,b\xe1sic,us-west,1,2,3,4,5,6,7,8\n")  # not UTF-8
    proc, log = run_dag(airflow_home, data, dag_folder(tmp_path, shard={"on_bad_record": "quarantine"}))
    assert proc.returncode == 0, log[-3000:]
    manifest, rows = published(data)
    assert rows == ids(good)  # every good row, in order, once
    assert (manifest["input_records"], manifest["quarantined"], manifest["rows_out"]) == (len(good) + 2, 2,
                                                                                          len(good))
    errors = Path(manifest["errors"]["bad_input"].removeprefix("file://")).read_text().splitlines()
    reasons = [(json.loads(e)["object"].rsplit("/", 1)[-1], json.loads(e)["reason"]) for e in errors]
    assert reasons == [("customers-0001.csv", "6 field(s), but the header has 12"),
                       ("customers-0003.csv", "invalid UTF-8 at byte 15 of the record (b'\\xe1sic'); "
                                              "records must be UTF-8")]
    assert "2 bad record(s) quarantined" in log


def test_empty_partition_publishes_an_empty_result_without_a_job(airflow_home, demo_root, tmp_path):
    data = copy_demo(demo_root, tmp_path)
    for path in (data / f"input/churn/dt={DS}").glob("*.csv"):
        path.write_text(path.read_text().splitlines(keepends=True)[0])  # the header only
    proc, log = run_dag(airflow_home, data, dag_folder(tmp_path))
    assert proc.returncode == 0, log[-3000:]
    manifest, rows = published(data)
    assert rows == [] and manifest["rows_out"] == 0 and manifest["parts"] == []
    assert_pointers_agree(data, "churn", DS, "scoring.churn")  # the table's day is the empty attempt too
    assert manifest["transform"]["status"] == "Skipped" and manifest["transform"]["job_name"] is None
    assert "no transform job is started (nothing to pay for)" in log


def model_that_logs_its_secret(data: Path) -> Path:
    """The demo model, with a handler that logs its DB_PASSWORD variable (as careless model code might)."""
    source = data / "models/churn/model.tar.gz"
    target = data / "models/leaky/model.tar.gz"
    target.parent.mkdir(parents=True)
    with tarfile.open(source) as src, tarfile.open(target, "w:gz") as dst:
        for member in src.getmembers():
            payload = src.extractfile(member).read() if member.isfile() else None
            if member.name.endswith("code/inference.py"):
                payload += (b"\n\n_load = model_fn\n\n\ndef model_fn(model_dir):\n"
                            b"    import logging\n"
                            b"    logging.getLogger('leaky').warning('DB_PASSWORD is %s', os.environ['DB_PASSWORD'])\n"
                            b"    return _load(model_dir)\n")
                member.size = len(payload)
            dst.addfile(member, io.BytesIO(payload) if payload is not None else None)
    return target


def test_secret_values_stay_out_of_xcom_rendered_fields_and_files(airflow_home, demo_root, tmp_path):
    data = copy_demo(demo_root, tmp_path)
    model = model_that_logs_its_secret(data)
    token, password = "tok-7Hq2xVb9Lr", "pw-Zm4Kc8Wd1N"
    home = tmp_path / "home"
    shutil.copytree(airflow_home, home)
    folder = dag_folder(tmp_path, transform={
        "model_data_url": model.as_uri(),
        "environment": {"API_TOKEN": "{{ var.value.api_token }}"},
        "model_environment": {"DB_PASSWORD": "{{ var.value.db_password }}"},
    })
    proc, log = run_dag(home, data, folder, AIRFLOW_VAR_API_TOKEN=token, AIRFLOW_VAR_DB_PASSWORD=password)
    assert proc.returncode == 0, log[-3000:]
    assert f"DB_PASSWORD is {password}" in log  # the model saw it (and dags test does not mask its console)
    database = b"".join(p.read_bytes() for p in home.glob("*.db*"))  # XCom, rendered fields, ...
    written = b"".join(p.read_bytes() for p in (data / "work").rglob("*") if p.is_file())
    written += b"".join(p.read_bytes() for p in (data / "output").rglob("*") if p.is_file())
    for secret in (token, password):
        assert secret.encode() not in database
        assert secret.encode() not in written


def test_dead_letter_scores_the_rest_and_lists_what_the_model_rejected(airflow_home, demo_root, tmp_path):
    data = copy_demo(demo_root, tmp_path)
    rows = input_rows(data)
    victim = data / f"input/churn/dt={DS}/customers-0002.csv"
    corrupt_tenure(victim, line=5)  # its 5th row (partition record 1005): tenure_months "twelve"
    bad = victim.read_text().splitlines()[5]
    proc, log = run_dag(airflow_home, data, dag_folder(tmp_path, transform={"dead_letter": True}))
    assert proc.returncode == 0, log[-3000:]
    manifest, published_rows = published(data)
    expected = [row for row in input_rows(data) if row != bad]
    assert published_rows == ids(expected) and len(expected) == len(rows) - 1
    assert (manifest["rows_in"], manifest["rejected"], manifest["rows_out"]) == (len(rows), 1, len(rows) - 1)
    [rejected] = [json.loads(line) for line in
                  Path(manifest["errors"]["model_rejected"].removeprefix("file://")).read_text().splitlines()]
    assert rejected["input"] == bad and rejected["origin"] == "customers-0002.csv record 5"
    assert "column 'tenure_months' must be numeric, got 'twelve'" in rejected["message"]
    assert "dead-letter: 1 record(s) of" in log
