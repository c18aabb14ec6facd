"""Process kills: SIGKILL a task at each failpoint of each step, let Airflow retry it, check what is published.

A real scheduler (LocalExecutor; on Airflow 3 with its api-server) on a PostgreSQL metadata DB runs the
repository's churn DAG with a test copy of ``dags/configs/churn.yaml`` (retries without delay, 4 shards of
a 3,000-row, 3-file input). ``airflow dags test`` first publishes a clean baseline for ``BASE``. Then, in
one scheduler session whose task processes have ``AIRFLOW_BT_FAILPOINTS`` armed (``airflow_bt/faults.py``),
one run per kill point scores its own date (a copy of the baseline's input), and the baseline's run is
cleared and rerun with three kills on the same date as the earlier publication. For every killed run:

- the failpoint fired (its marker exists) and Airflow retried the killed task (try numbers, history);
- the run succeeded; ``_LATEST.json`` points at an attempt with ``_SUCCESS`` (also sampled while the runs
  go on) and the published rows are the input rows, in order, each with exactly one prediction, equal to
  the baseline's;
- every object that existed before the runs started is unchanged (sha256 and mtime);
- what the killed tries left behind is exactly the documented outcome of that point: a work folder the
  publication does not use, or an output attempt folder without ``_SUCCESS`` (``publish.before_latest``:
  a complete attempt ``_LATEST.json`` never pointed at); a killed transform's complete ``.out`` objects
  are reused by its retry.

How the retry comes about (observed on the pinned versions):

- Airflow 3.3: the task-sdk supervisor sees its child die (``exit_code=<Negsignal.SIGKILL: -9>
  final_state=up_for_retry``) but sends no state, as up_for_retry is one of the states the task itself
  reports; the TI stays ``running`` until the LocalExecutor reports the workload finished, and the scheduler
  ("reported that the task instance ... finished with state success, but the task instance's state attribute
  is running") marks it UP_FOR_RETRY.
- Airflow 2.11: LocalTaskJob logs "Task exited with return code -9" and ends, leaving the TI ``running``; the
  scheduler's zombie detection (every 10 s) finds it and the DAG processor's callback marks it UP_FOR_RETRY.

``test_publish_refuses_predictions_made_from_another_shard_attempt`` pins the fix of a bug the kill test met
on Airflow 2: after a shard rerun the transform did not follow (a stale zombie callback; or clearing only
`shard` and `publish`), publish joined new shards with old predictions; it now refuses.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import yaml
from airflow_env import (
    REPO,
    AirflowServices,
    airflow,
    airflow_env,
    api_healthy,
    free_port,
    trigger_dag_runs,
    wait_for,
)
from table_checks import GlueCatalogs, assert_pointers_agree

from airflow_bt.compat import AIRFLOW_V3
from airflow_bt.faults import FAILPOINT_DIR_ENV, FAILPOINTS_ENV
from airflow_bt.storage.uris import file_path
from faults.conftest import FAULT_DS

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DAG_ID = "churn_nightly_scoring"
BASE = FAULT_DS  # the baseline's date; its rerun is killed after the baseline was published
#: kill point -> the date whose run it kills (every date holds a copy of the baseline's input)
POINTS = {
    "shard.after_shard": "2026-06-01",
    "shard.before_summary": "2026-06-02",
    "shard.before_return": "2026-06-03",
    "transform.after_output": "2026-06-04",
    "transform.before_return": "2026-06-05",
    "publish.after_part": "2026-06-06",
    "publish.before_success": "2026-06-07",
    "publish.before_latest": "2026-06-08",
    "publish.before_tables": "2026-06-09",
    "publish.after_tables": "2026-06-10",
}
#: kills in the rerun of BASE: a shard kill, then two kills of the same publish task (retries: 2)
BASE_POINTS = ("shard.after_shard", "publish.before_success", "publish.before_latest")
SHARDS = 4
TMP_PREFIX = ".airflow-bt-tmp-"


def items(points: dict[str, str]) -> list[str]:
    return [f"{point}@dt={ds}" for point, ds in points.items()] + [f"{point}@dt={BASE}" for point in BASE_POINTS]


def marker(folder: Path, item: str) -> Path:
    """The file ``airflow_bt.faults.failpoint`` creates when ``item`` fires (just before the kill)."""
    point = item.partition("@")[0]
    return folder / f"{point}-{hashlib.sha1(item.encode()).hexdigest()[:10]}.fired"


def replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"dags/configs/churn.yaml no longer has exactly one {old!r}"
    return text.replace(old, new)


def dags_folder(tmp_path: Path, input_bytes: int, glue: GlueCatalogs) -> Path:
    """The shipped DAG file and a copy of its config: retries without delay, runs side by side, SHARDS shards.

    The input sensor's 1-minute timeout ends the one scheduled run unpausing creates (for the latest
    closed day, which has no input) on its own.
    """
    folder = tmp_path / "dags"
    (folder / "configs").mkdir(parents=True)
    shutil.copy(REPO / "dags" / "scoring_dags.py", folder)
    config = (REPO / "dags" / "configs" / "churn.yaml").read_text()
    assert "\nretries: 2\n" in config  # BASE's rerun has its publish task killed twice
    config = replace_once(config, "retry_delay_minutes: 5", "retry_delay_minutes: 0")
    config = replace_once(config, "max_active_runs: 1", "max_active_runs: 16")
    config = replace_once(config, "timeout_minutes: 360", "timeout_minutes: 1")
    target_mb = input_bytes / SHARDS / (1024 * 1024) * 1.0001
    config = replace_once(config, "target_shard_mb: 64", f"target_shard_mb: {target_mb:.6f}")
    assert "instance_count: 1\n" in config  # transform.after_output fires in the task's own process
    # the day's pointers: the Iceberg table (its SQLite catalog on Airflow 3; 2.11 cannot run it) and a Hive
    # partition on moto's Glue (both lines), so the table kill points fire, and are checked, on both
    config += f"\n  glue_table: {{database: {glue.database}, table: churn_hive}}\n"
    assert yaml.safe_load(config)["publish"]["glue_table"]["database"] == glue.database
    (folder / "configs" / "churn.yaml").write_text(config)
    return folder


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """Every object under the data root (temp files included) with its sha256 and mtime; the Iceberg catalog
    (``catalog/``: its database and metadata, which each commit adds to) is the table's, not an attempt's."""
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file() and p.relative_to(root).parts[0] != "catalog"}


def input_rows(data: Path, ds: str) -> tuple[str, list[str]]:
    header, rows = "", []
    for path in sorted((data / "input/churn" / f"dt={ds}").glob("*.csv")):
        lines = path.read_text().splitlines()
        header = lines[0]
        rows += lines[1:]
    return header, rows


def latest_attempt(data: Path, ds: str) -> Path | None:
    pointer = data / "output/churn" / f"dt={ds}" / "_LATEST.json"
    if not pointer.exists():
        return None
    return Path(file_path(json.loads(pointer.read_text())["attempt_prefix"]))


def published(data: Path, ds: str) -> tuple[dict, list[str], pa.Table]:
    """Follow ``_LATEST.json`` -> ``_manifest.json`` -> parts: (manifest, column names, rows)."""
    pointer = json.loads((data / "output/churn" / f"dt={ds}" / "_LATEST.json").read_text())
    attempt = Path(file_path(pointer["attempt_prefix"]))
    assert (attempt / "_SUCCESS").exists(), f"_LATEST.json of {ds} points at {attempt}, which has no _SUCCESS"
    manifest = json.loads(Path(file_path(pointer["manifest"])).read_text())
    assert Path(file_path(manifest["attempt_prefix"])) == attempt
    tables = []
    for part in manifest["parts"]:
        path = Path(file_path(part["uri"]))
        assert path.parent == attempt, f"{path} is not in the published attempt {attempt}"
        tables.append(pq.read_table(path) if path.suffix == ".parquet" else pacsv.read_csv(path))
        assert tables[-1].num_rows == part["rows"], path
    rows = pa.concat_tables(tables)
    return manifest, rows.column_names, rows


def check_publication(data: Path, ds: str, baseline: pa.Table | None, glue: GlueCatalogs
                      ) -> tuple[dict, pa.Table]:
    """Exactly one prediction per input row, in order (and the baseline's predictions for the same rows); the
    table's day (Airflow 3's SQLite catalog) holds the same attempt as _LATEST.json."""
    manifest, names, rows = published(data, ds)
    in_header, in_rows = input_rows(data, ds)
    assert names == [*in_header.split(","), "churn_probability", "scored_date"]
    assert manifest["rows_in"] == manifest["rows_out"] == rows.num_rows == len(in_rows) == 3000
    assert len(manifest["parts"]) == SHARDS
    assert rows.column("customer_id").to_pylist() == [row.split(",", 1)[0] for row in in_rows]
    assert all(0.0 <= p <= 1.0 for p in rows.column("churn_probability").to_pylist())
    if baseline is not None:
        assert rows.drop_columns(["scored_date"]).equals(baseline.drop_columns(["scored_date"])), \
            f"{ds}: the published predictions differ from the baseline's"
    # ... and the predictions were made from the very shards that were joined (one run slug folder)
    run_folder = Path(file_path(manifest["shards"])).parent
    assert {folder.parent.parent for folder in used_folders(manifest) if folder.parent.name == "transform"} \
        == {run_folder}, f"{ds}: predictions of other shards were joined: {manifest['predictions']}"
    assert_pointers_agree(data, "churn", ds, "scoring.churn", glue=glue.hive_partition())
    return manifest, rows


def used_folders(manifest: dict) -> set[Path]:
    """The folders the publication reads or is: the shards, every predictions prefix, the attempt."""
    predictions = manifest["predictions"]
    prefixes = [manifest["shards"], manifest["attempt_prefix"],
                *([predictions] if isinstance(predictions, str) else predictions)]
    return {Path(file_path(uri)) for uri in prefixes}


def leftovers(data: Path, ds: str, manifest: dict, before: dict[str, tuple[str, int]]) -> list[tuple]:
    """The folders of a date that the published attempt does not use and that did not exist before the run.

    ``("shard", parts, manifest written, summary written)``, ``("transform", .out objects)`` and
    ``("attempt", parts, _manifest.json, _SUCCESS)``; temp files (never listed by the storage) are not counted.
    """
    used = used_folders(manifest)
    existed = {str(Path(key).parent) for key in before}
    found: list[tuple] = []

    def objects(folder: Path) -> list[str]:
        return [p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith(TMP_PREFIX)]

    for step in sorted((data / "work/churn" / f"dt={ds}").glob("*/*/")):
        if step in used or str(step.relative_to(data)) in existed:
            continue
        names = objects(step)
        if step.name.startswith("shard-"):
            found.append(("shard", len(names), step.with_suffix(".manifest").exists(),
                          step.with_suffix(".json").exists()))
        elif step.name == "transform":  # one folder per job of the run, beside the jobs' records
            found += [("transform", len(objects(job))) for job in sorted(step.iterdir())
                      if job.is_dir() and job not in used]
        else:  # pragma: no cover - a new kind of step folder: make the test say so
            found.append(("unknown", str(step)))
    for attempt in sorted(p for p in (data / "output/churn" / f"dt={ds}").iterdir() if p.is_dir()):
        if attempt in used or str(attempt.relative_to(data)) in existed:
            continue
        names = objects(attempt)
        found.append(("attempt", sum(n.startswith("part-") for n in names), "_manifest.json" in names,
                      "_SUCCESS" in names))
    return sorted(found)


#: What a kill at each point leaves behind once the retry has published (SHARDS shards, so N = 4).
EXPECTED_LEFTOVERS = {
    "shard.after_shard": [("shard", 1, False, False)],
    "shard.before_summary": [("shard", SHARDS, True, False)],
    "shard.before_return": [("shard", SHARDS, True, True)],
    # A transform retry reuses the killed try's complete .out objects (its job's folder) and scores only the
    # rest (EXPECTED_REUSED): the killed try's folder is part of the publication, nothing is left over. Killed
    # after its job completed, the retry finds the job Completed and takes its result: nothing is scored again.
    "transform.after_output": [],
    "transform.before_return": [],
    "publish.after_part": [("attempt", 1, False, False)],
    "publish.before_success": [("attempt", SHARDS, True, False)],
    "publish.before_latest": [("attempt", SHARDS, True, True)],  # complete, but _LATEST.json never pointed here
    # complete and named by _LATEST.json (and, after the commit, by the table's day) until the retry's attempt
    "publish.before_tables": [("attempt", SHARDS, True, True)],
    "publish.after_tables": [("attempt", SHARDS, True, True)],
}

#: Shards whose predictions the transform retry takes from the killed try instead of scoring them again.
EXPECTED_REUSED = {"transform.after_output": 1}


def retry_marks(tmp_path: Path, run_id: str, task_id: str) -> int:
    """How often Airflow logged marking a try of the task UP_FOR_RETRY (Airflow 3: the scheduler, on the
    executor's report; Airflow 2: the DAG processor, running the zombie callback)."""
    needle = f"Marking task as UP_FOR_RETRY. dag_id={DAG_ID}, task_id={task_id}, run_id={run_id},"
    logs = [*(tmp_path / "logs").glob("*.log"),
            *(p for p in (tmp_path / "home/logs/scheduler").rglob("*.log") if "latest" not in p.parts)]
    return sum(log.read_text(errors="replace").count(needle) for log in logs)


def describe_leftovers(data: Path, ds: str, manifest: dict, before: dict) -> list[str]:
    """A listing (relative paths) of the partial objects of a date, temp files included, for the log."""
    used = used_folders(manifest)
    used_files = {folder.with_suffix(suffix) for folder in used
                  for suffix in (".manifest", ".json", ".job.json", ".end.json", ".log.json")}
    lines = []
    for folder in (data / "work/churn" / f"dt={ds}", data / "output/churn" / f"dt={ds}"):
        for path in sorted(folder.rglob("*")):
            if (path.is_file() and str(path.relative_to(data)) not in before and path.parent not in used
                    and path not in used_files and path.name != "_LATEST.json"):
                lines.append(str(path.relative_to(folder)))
    return lines


def test_sigkilled_tasks_retry_and_publish_exactly_what_a_clean_run_publishes(pg_database, fault_source, tmp_path,
                                                                             glue_catalogs):
    started = time.monotonic()
    data = tmp_path / "data"
    shutil.copytree(fault_source / "models", data / "models")
    source = fault_source / "input/churn" / f"dt={BASE}"
    for ds in (BASE, *POINTS.values()):
        shutil.copytree(source, data / "input/churn" / f"dt={ds}")
    assert len(list(source.glob("*.csv"))) == 3
    input_bytes = sum(p.stat().st_size for p in source.glob("*.csv"))
    markers = tmp_path / "failpoints"
    markers.mkdir()
    home = tmp_path / "home"
    port = free_port()
    env = airflow_env(
        home, data,
        AIRFLOW__CORE__DAGS_FOLDER=str(dags_folder(tmp_path, input_bytes, glue_catalogs)),
        AIRFLOW_CONN_AWS_DEFAULT=glue_catalogs.env()["AIRFLOW_CONN_AWS_DEFAULT"],  # Glue on moto
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=pg_database.url,
        AIRFLOW__CORE__EXECUTOR="LocalExecutor",
        AIRFLOW__CORE__PARALLELISM="6",
        AIRFLOW__API__PORT=str(port),
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{port}/execution/",
        AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC="1",
        # Airflow 2 fails a killed try through zombie detection (every 10 s): a callback the DAG processor
        # runs when it next parses the DAG file. A callback that arrives while the file is being parsed
        # waits for the next parse (min_file_process_interval, 30 s by default); meanwhile the next
        # detection sends it again, and the stale duplicate later fails the retry that had succeeded
        # (apache/airflow#42553, #51969). Parsing every 2 s runs each callback before the next detection.
        **({} if AIRFLOW_V3 else {"AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "2"}),
    )
    # Only the scheduler's task processes are armed; the baseline (`dags test`) and the CLI are not.
    armed = {**env, FAILPOINTS_ENV: ",".join(items(POINTS)), FAILPOINT_DIR_ENV: str(markers)}
    airflow(env, "db", "migrate")
    airflow(env, "dags", "reserialize")  # the DAG exists in the DB, paused: the scheduler leaves it alone
    date_column = "logical_date" if AIRFLOW_V3 else "execution_date"
    run_ids = {ds: f"kill__{ds}T00:00:00+00:00" for ds in POINTS.values()}

    def run_states() -> dict[str, str]:
        return {str(ds): state for ds, state in pg_database.query(
            f"SELECT {date_column}::date::text, state FROM dag_run WHERE dag_id=%s", DAG_ID)}

    def task_tries(ds: str) -> dict[str, tuple[int, str]]:
        return {task: (tries, state) for task, tries, state in pg_database.query(
            f"SELECT ti.task_id, ti.try_number, ti.state FROM task_instance ti JOIN dag_run dr "
            f"ON dr.dag_id = ti.dag_id AND dr.run_id = ti.run_id WHERE dr.dag_id=%s AND dr.{date_column}::date = "
            f"%s::date", DAG_ID, ds)}

    def run_id(ds: str) -> str:
        (found,) = pg_database.query(
            f"SELECT run_id FROM dag_run WHERE dag_id=%s AND {date_column}::date = %s::date", DAG_ID, ds)
        return str(found[0])

    def history(ds: str) -> list[tuple[str, int, str]]:
        return [tuple(row) for row in pg_database.query(
            f"SELECT h.task_id, h.try_number, h.state FROM task_instance_history h JOIN dag_run dr "
            f"ON dr.dag_id = h.dag_id AND dr.run_id = h.run_id WHERE dr.dag_id=%s AND dr.{date_column}::date = "
            f"%s::date ORDER BY h.task_id, h.try_number", DAG_ID, ds)]

    components = [["api-server", "--port", str(port)], ["scheduler"]] if AIRFLOW_V3 else [["scheduler"]]
    with AirflowServices(armed, tmp_path / "logs", *components) as services:
        # The clean baseline, in-process and unarmed, while the services start.
        airflow(env, "dags", "test", DAG_ID, BASE)
        baseline_manifest, baseline_rows = check_publication(data, BASE, None, glue_catalogs)
        assert {task: tries for task, (tries, _) in task_tries(BASE).items()} == {
            "wait_for_input": 1, "shard": 1, "transform": 1, "publish": 1}
        before = snapshot(data)

        trigger_dag_runs(env, DAG_ID, [(run_id, ds) for ds, run_id in run_ids.items()])
        airflow(env, "tasks", "clear", DAG_ID, "-s", BASE, "-e", BASE, "-y")  # rerun the published date
        if AIRFLOW_V3:
            wait_for(lambda: api_healthy(port), "the api-server", services, timeout=120)
        airflow(env, "dags", "unpause", DAG_ID)
        dates = [*POINTS.values(), BASE]
        bad_pointers: list[str] = []

        def all_done() -> bool:
            for ds in dates:  # sampled while the runs go on: never a pointer at an attempt without _SUCCESS
                attempt = latest_attempt(data, ds)
                if attempt is not None and not (attempt / "_SUCCESS").exists():
                    bad_pointers.append(f"{ds}: {attempt}")
            states = run_states()
            failed = [ds for ds in dates if states.get(ds) == "failed"]
            if failed:
                raise AssertionError(f"runs failed: {[(ds, task_tries(ds)) for ds in failed]}; "
                                     f"logs under {home / 'logs'}")
            return all(states.get(ds) == "success" for ds in dates)

        wait_for(all_done, "every killed run to be retried to success", services, timeout=240,
                 describe=lambda: {ds: (run_states().get(ds), task_tries(ds)) for ds in dates})
    assert bad_pointers == []
    elapsed = time.monotonic() - started

    # Nothing that existed before the runs changed; only BASE's pointer moved (to the rerun's attempt).
    after = snapshot(data)
    pointer = f"output/churn/dt={BASE}/_LATEST.json"
    changed = [key for key, value in before.items() if key != pointer and after.get(key) != value]
    assert changed == [], f"the killed runs changed earlier objects: {changed}"
    assert Path(file_path(baseline_manifest["attempt_prefix"])) != latest_attempt(data, BASE)

    report = [f"Airflow {'3' if AIRFLOW_V3 else '2'}: {elapsed:.0f} s"]
    for ds, points in [*((ds, (point,)) for point, ds in POINTS.items()), (BASE, BASE_POINTS)]:
        for point in points:
            assert marker(markers, f"{point}@dt={ds}").exists(), f"{point}@dt={ds} never fired"
        manifest, _ = check_publication(data, ds, baseline_rows, glue_catalogs)
        kills = {task: sum(p.startswith(f"{task}.") for p in points) for task in ("shard", "transform", "publish")}
        first_try = 2 if ds == BASE else 1  # the cleared baseline run starts at its second try
        tries = task_tries(ds)
        assert tries == {"wait_for_input": (first_try, "success"),
                         **{task: (first_try + kills[task], "success") for task in kills}}, (ds, points)
        assert manifest["try_number"] == first_try + kills["publish"]
        # The killed tries, archived when Airflow retried them (both lines archive a try that ended
        # up_for_retry as failed), and the retry decision in the logs.
        killed = [(task, number) for task, number, state in history(ds) if task in kills and number >= first_try
                  and state == "failed"]
        assert killed == sorted((task, first_try + k) for task in kills for k in range(kills[task])), \
            (ds, history(ds))
        marked = {task: retry_marks(tmp_path, run_id(ds), task) for task in kills}
        assert all(marked[task] >= kills[task] for task in kills), (ds, marked)
        assert manifest["transform"]["reused_shards"] == sum(EXPECTED_REUSED.get(p, 0) for p in points), ds
        found = leftovers(data, ds, manifest, before)
        assert found == sorted(entry for point in points for entry in EXPECTED_LEFTOVERS[point]), (ds, points)
        report.append(f"{ds} {'+'.join(points)}: tries {tries}; marked up_for_retry {marked}; left "
                      f"{describe_leftovers(data, ds, manifest, before)}")
    print("\n".join(report))


def test_publish_refuses_predictions_made_from_another_shard_attempt(fault_source, tmp_path):
    """Reproduction without a scheduler: shard (try 1) -> transform (try 1); the input changes (two rows of one
    shard swap places, counts unchanged); shard reruns (try 2, a new slug) -> publish joins shard try 2 with
    transform try 1. Correct outcomes: publish refuses, or every row carries its own prediction."""
    from types import SimpleNamespace

    from airflow_bt.compat import AirflowException
    from airflow_bt.operators.postprocess import PublishPredictionsOperator
    from airflow_bt.operators.shard import ShardInputOperator
    from airflow_bt.operators.transform import BatchTransformOperator

    data = tmp_path / "data"
    shutil.copytree(fault_source / "models", data / "models")
    shutil.copytree(fault_source / "input/churn" / f"dt={BASE}", data / "input/churn" / f"dt={BASE}")
    root = data.as_uri()
    input_bytes = sum(p.stat().st_size for p in (data / "input/churn" / f"dt={BASE}").glob("*.csv"))

    def context(try_number: int) -> dict:
        return {"ti": SimpleNamespace(try_number=try_number, xcom_push=lambda **_: None), "ds": BASE,
                "run_id": f"manual__{BASE}T00:00:00+00:00", "dag": SimpleNamespace(dag_id=DAG_ID)}

    def shard(try_number: int) -> dict:
        return ShardInputOperator(
            task_id="shard", input_uri=f"{root}/input/churn/dt={BASE}/", work_uri=f"{root}/work/churn/dt={BASE}/",
            data_format="csv", target_shard_mb=input_bytes / SHARDS / (1024 * 1024) * 1.0001,
        ).execute(context(try_number))

    def publish(shards: dict, transform: dict, try_number: int) -> None:
        PublishPredictionsOperator(
            task_id="publish", shards=shards, transform=transform, output_uri=f"{root}/output/churn/dt={BASE}/",
            prediction_columns=["churn_probability"],
        ).execute(context(try_number))

    shards_a = shard(1)
    transform_a = BatchTransformOperator(
        task_id="transform", shards=shards_a, backend="local", model_name="churn-model",
        model_data_url=f"{root}/models/churn/model.tar.gz", instance_count=1, max_concurrent_transforms=2,
        job_name_prefix="churn",
    ).execute(context(1))
    publish(shards_a, transform_a, 1)  # consistent: the truth for every row
    _, _, rows = published(data, BASE)
    truth = dict(zip(rows.column("customer_id").to_pylist(), rows.column("churn_probability").to_pylist(),
                     strict=True))

    first = sorted((data / "input/churn" / f"dt={BASE}").glob("*.csv"))[0]
    lines = first.read_text().splitlines(keepends=True)
    lines[1], lines[2] = lines[2], lines[1]  # the upstream rewrote its file: same rows, same count, new order
    first.write_text("".join(lines))
    shards_b = shard(2)
    assert shards_b["run_slug"] != shards_a["run_slug"]
    with pytest.raises(AirflowException, match=r"predictions were made from the shards of .*shard-1\.json, but "
                                               r"the shard task's latest output is .*shard-2\.json"):
        publish(shards_b, transform_a, 2)
    _, _, rows = published(data, BASE)  # still the first publication, every row with its own prediction
    assert rows.num_rows == len(truth) and all(
        truth[customer] == probability for customer, probability in
        zip(rows.column("customer_id").to_pylist(), rows.column("churn_probability").to_pylist(), strict=True))
