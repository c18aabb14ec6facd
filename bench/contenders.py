"""The contenders of ``make bench``, each run in its own process by :mod:`bench.run`.

``python -m bench.contenders NAME --rows N --out DIR [--shards K]`` runs one contender once
over the cached data of ``N`` rows, writes its output below ``DIR`` and prints one line
``BENCH-RESULT {json}`` with its wall time (``wall_s``, from the first byte read to the
last byte written: interpreter start-up and the contender's own imports are not counted,
the worker processes the pipeline starts are) and per-phase times.

- ``pipeline``: shard -> local transform (the demo model, the churn DAG's settings:
  InstanceCount 1 with MaxConcurrentTransforms 2, MultiRecord, 6 MB payloads) -> publish,
  called as the Airflow tasks call them, without Airflow. The handler predicts with
  ``CHURN_PREDICT_THREADS`` OpenMP threads (default 1 per request; two requests in flight use
  the two cores, as predict releases the GIL).
- ``naive``: what a user would write instead: ``pandas.read_csv`` of every file,
  ``predict_proba`` of the same model (scikit-learn's default threads: all cores),
  ``DataFrame.to_csv``, in one process.
- ``floor``: the bare cost of parsing, predicting and writing: ``pyarrow.csv.read_csv`` (its
  default: multi-threaded), ``to_pandas()`` of the model's input columns only (the
  scikit-learn pipeline selects columns by name), ``predict_proba`` (default threads),
  ``pyarrow.csv.write_csv`` of the rows plus the prediction. The model load is not counted.
- ``shard``: the shard step alone over the one concatenated file, cut into ``--shards`` shards
  (``--numpy-loaded``: with numpy already imported, which the step then counts records with).

The Parquet path, over the typed Parquet copy of the same day (``csv_to_parquet`` of each file):

- ``pipeline_parquet``: the pipeline with Parquet in (``data_format="parquet"``; the shards are
  header-less CSV of every column but ``customer_id``, which the handler is told through
  ``CHURN_INPUT_COLUMNS`` in the transform's ``Environment``) and Parquet out
  (``output_format="parquet"``: the input's typed columns plus the prediction, zstd).
- ``naive_parquet``: ``pandas.read_parquet`` of every file and ``pd.concat``, ``predict_proba``,
  ``DataFrame.to_parquet`` (pandas' defaults: pyarrow, snappy), in one process.
- ``floor_parquet``: ``pyarrow.parquet.read_table`` (multi-threaded), ``to_pandas()`` of the
  model's input columns, ``predict_proba``, ``pyarrow.parquet.write_table`` of the rows plus the
  prediction (zstd, as the pipeline writes); the phases timed, their sum the floor's time.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import DS, MODEL, Dataset, dataset, file_uri, model_dir, parquet_dataset, pipeline_settings
from bench.measure import own_peak_kb

RESULT_PREFIX = "BENCH-RESULT "


def _logger(verbose: bool) -> logging.Logger:
    logging.basicConfig(stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    log = logging.getLogger("bench")
    log.setLevel(logging.INFO if verbose else logging.WARNING)
    return log


def run_pipeline(data: Dataset, out: Path, *, verbose: bool = False, instance_count: int | None = None,
                 max_concurrent_transforms: int | None = None, parquet: bool = False,
                 publish_rounds: int = 0, table_rounds: int = 0) -> dict[str, Any]:
    """Shard, transform and publish one day as the nightly DAG's three tasks do.

    ``parquet``: from the day's Parquet copy, every column but ``customer_id`` sent to the model (as
    header-less CSV, the handler told the columns by ``CHURN_INPUT_COLUMNS``), typed Parquet out.
    ``publish_rounds``: then publish the same predictions ``2 x publish_rounds`` more times into new
    attempts, alternately without statistics (the publish step before prediction checks) and with the churn
    DAG's ``postprocess.checks``; their times are reported apart (``publish_plain_s``, ``publish_checked_s``),
    outside ``wall_s``.
    ``table_rounds``: then publish ``2 x table_rounds`` more times, alternately without and with the Iceberg
    table commit (see :func:`_table_rounds`); reported apart too, outside ``wall_s``.
    """
    from airflow_bt.steps.layout import RunLayout
    from airflow_bt.steps.publish import publish_attempt
    from airflow_bt.steps.shard import shard_partition
    from airflow_bt.storage import for_uri
    from airflow_bt.transform.local_engine import run_transform_job
    from airflow_bt.transform.request import build_model_request, build_transform_request

    log = _logger(verbose)
    settings = pipeline_settings()
    instances = instance_count or settings["instance_count"]
    environment = dict(settings["environment"])
    shard_options: dict[str, Any] = {"data_format": settings["format"]}
    publish_options: dict[str, Any] = {}
    if parquet:
        columns = parquet_model_columns(data)
        input_uri = file_uri(data.parquet_dir) + "/"
        shard_options = {"data_format": "parquet", "columns": columns}
        environment["CHURN_INPUT_COLUMNS"] = ",".join(columns)
        publish_options = {"output_format": "parquet"}
    else:
        input_uri = file_uri(data.input_dir) + "/"
    root = file_uri(out)
    layout = RunLayout(work_root=f"{root}/work/{MODEL}/dt={DS}/", output_root=f"{root}/output/{MODEL}/dt={DS}/",
                       slug="bench")
    model_url = file_uri(model_dir() / "model.tar.gz")
    store = for_uri(input_uri)

    started = time.perf_counter()
    summary = shard_partition(
        store, input_uri, layout.step_prefix("shard", 1), layout.step_file("shard", 1, ".manifest"),
        layout.step_file("shard", 1, ".json"), **shard_options,
        target_shard_mb=settings["target_shard_mb"], min_shards=instances, max_shards=settings["max_shards"],
        validation=settings["validation"], max_record_bytes=settings["max_payload_mb"] * 1024 * 1024, logger=log,
    )
    sharded = time.perf_counter()
    request = build_transform_request(
        job_name="bench-churn", model_name=settings["model_name"], input_uri=summary["manifest_uri"],
        output_uri=layout.step_prefix("transform", 1), content_type=summary["content_type"],
        accept=settings["accept"], instance_count=min(instances, len(summary["shards"])),
        batch_strategy=settings["batch_strategy"], max_payload_mb=settings["max_payload_mb"],
        max_concurrent_transforms=max_concurrent_transforms or settings["max_concurrent_transforms"],
        environment=environment,
    )
    model_request = build_model_request(model_name=settings["model_name"], model_data_url=model_url,
                                        image=settings["image"], environment=settings["model_environment"])
    job = run_transform_job(request, model_request, log=log)
    if job["TransformJobStatus"] != "Completed":
        raise RuntimeError(f"transform job {job['TransformJobStatus']}: {job.get('FailureReason')}")
    transformed = time.perf_counter()
    manifest = publish_attempt(
        store, summary, layout.step_prefix("transform", 1), layout.attempt_prefix(1), layout.latest_uri,
        prediction_columns=settings["prediction_columns"], metadata={"run_id": "bench", "try_number": 1},
        logger=log, **publish_options,
    )
    published = time.perf_counter()
    if manifest["rows_out"] != data.rows:
        raise RuntimeError(f"published {manifest['rows_out']} rows, expected {data.rows}")
    rounds: dict[str, list[float]] = {"publish_plain_s": [], "publish_checked_s": []}
    for attempt in range(2, 2 + 2 * publish_rounds):
        checked = attempt % 2 == 1
        began = time.perf_counter()
        publish_attempt(store, summary, layout.step_prefix("transform", 1), layout.attempt_prefix(attempt),
                        layout.latest_uri, prediction_columns=settings["prediction_columns"], logger=log,
                        checks=settings["checks"] if checked else None, statistics=checked, **publish_options)
        rounds["publish_checked_s" if checked else "publish_plain_s"].append(time.perf_counter() - began)
    table: dict[str, Any] = {}
    if table_rounds:
        table = _table_rounds(store, summary, layout, root, settings, table_rounds,
                              first_attempt=2 + 2 * publish_rounds, log=log)
    stats = job.get("LocalEngineStats", {})
    result: dict[str, Any] = {
        "wall_s": published - started,
        "rows": manifest["rows_out"],
        "phases": {"shard": sharded - started, "transform": transformed - sharded,
                   "publish": published - transformed},
        "shards": len(summary["shards"]),
        "instances": request["TransformResources"]["InstanceCount"],
        "requests": stats.get("requests"),
        "predict_threads": os.environ.get("CHURN_PREDICT_THREADS", "1 (handler default)"),
        "output": manifest["attempt_prefix"],
    }
    if publish_rounds:
        result.update(rounds)
    result.update(table)
    if parquet:
        result["columns_sent"] = shard_options["columns"]
        result["shard_content_type"] = summary["content_type"]
        result["output_format"] = "parquet"
    return result


def _table_rounds(store: Any, summary: dict[str, Any], layout: Any, root: str, settings: dict[str, Any],
                  rounds: int, *, first_attempt: int, log: logging.Logger) -> dict[str, Any]:
    """Publish the same predictions ``2 x rounds`` times into new attempts of the day, alternately without and
    with the Iceberg table commit, as the churn DAG's publish task does it with and without ``publish.table``.

    Both arms write typed Parquet parts (``output_format="parquet"``, also for CSV input) with the churn DAG's
    ``postprocess.checks``. The table arm adds the ``scored_date`` partition column to the parts
    (``partition_column``) and then runs :func:`~airflow_bt.tables.sync.follow_latest` with an
    :class:`~airflow_bt.tables.iceberg.IcebergTablePointer` on the embedded default catalog (SQLite SQL catalog
    under this run's output root, loaded in every round as the task loads it): one commit that replaces the
    day's partition with the attempt's parts. Before the timed rounds, one publication with the commit creates
    the table (and imports pyiceberg and SQLAlchemy): timed apart (``publish_table_create_s``), not in the
    medians. ``publish_table_s`` is the whole table arm (publish + commit), ``table_commit_s`` its commit alone.
    Where the SQL catalog cannot run (SQLAlchemy 1.4, Airflow 2.11), returns ``table_skipped``: the reason.
    """
    import datetime as dt

    from airflow_bt.steps.publish import publish_attempt
    from airflow_bt.tables.catalog import catalog_unavailable, default_catalog, load_catalog
    from airflow_bt.tables.iceberg import PARTITION_COLUMN, IcebergTablePointer
    from airflow_bt.tables.sync import follow_latest

    properties = default_catalog(root)
    assert properties is not None  # a file:// root
    reason = catalog_unavailable(properties)
    if reason:
        return {"table_skipped": reason}
    day = dt.date.fromisoformat(DS)
    identifier = "scoring.churn"

    def publish(attempt: int, with_table: bool) -> tuple[float, float]:
        began = time.perf_counter()
        publish_attempt(store, summary, layout.step_prefix("transform", 1), layout.attempt_prefix(attempt),
                        layout.latest_uri, prediction_columns=settings["prediction_columns"], logger=log,
                        checks=settings["checks"], output_format="parquet",
                        partition_column=(PARTITION_COLUMN, day) if with_table else None)
        published = time.perf_counter()
        if with_table:
            pointer = IcebergTablePointer(load_catalog(properties), identifier)
            named = follow_latest(store, layout.latest_uri, DS, [pointer], logger=log)
            if named[pointer.name] != layout.attempt_prefix(attempt):
                raise RuntimeError(f"{identifier} names {named[pointer.name]} for {DS}, not attempt {attempt}")
        return time.perf_counter() - began, time.perf_counter() - published

    create_s, create_commit_s = publish(first_attempt, True)
    out: dict[str, Any] = {"publish_table_create_s": create_s, "table_create_commit_s": create_commit_s,
                           "publish_table_plain_s": [], "publish_table_s": [], "table_commit_s": []}
    for attempt in range(first_attempt + 1, first_attempt + 1 + 2 * rounds):
        with_table = attempt % 2 == first_attempt % 2  # plain first, then with the table, alternately
        seconds, commit = publish(attempt, with_table)
        if with_table:
            out["publish_table_s"].append(seconds)
            out["table_commit_s"].append(commit)
        else:
            out["publish_table_plain_s"].append(seconds)
    return out


def parquet_model_columns(data: Dataset) -> list[str]:
    """What ``pipeline_parquet`` sends the model: every column of the day but ``customer_id``, in file order.

    Read from the CSV header the Parquet copy was made from (not from ``airflow_bt.demo.data``, whose
    numpy and pandas the pipeline's driver would then carry in its RSS)."""
    with open(data.files[0], "rb") as fh:
        header = fh.readline().decode("utf-8").strip()
    return [name for name in header.split(",") if name != "customer_id"]


def run_naive(data: Dataset, out: Path, *, parquet: bool = False) -> dict[str, Any]:
    """The script a user would write: pandas in, predict_proba, pandas out; one process.

    ``parquet``: ``read_parquet`` of the day's Parquet copy and ``to_parquet`` (pandas' defaults: pyarrow,
    snappy) instead of ``read_csv``/``to_csv``."""
    import joblib
    import pandas as pd

    model_file = model_dir() / "model.joblib"
    started = time.perf_counter()
    read_file = pd.read_parquet if parquet else pd.read_csv
    frame = pd.concat([read_file(path) for path in (data.parquet_files if parquet else data.files)],
                      ignore_index=True)
    read = time.perf_counter()
    model = joblib.load(model_file)
    loaded = time.perf_counter()
    frame["churn_probability"] = model.predict_proba(frame)[:, 1]
    predicted = time.perf_counter()
    if parquet:
        frame.to_parquet(out / "predictions.parquet", index=False)
    else:
        frame.to_csv(out / "predictions.csv", index=False)
    written = time.perf_counter()
    return {
        "wall_s": written - started,
        "rows": len(frame),
        "phases": {"read": read - started, "load_model": loaded - read, "predict": predicted - loaded,
                   "write": written - predicted},
        "predict_threads": "scikit-learn default (all cores)",
    }


def run_floor(data: Dataset, out: Path, *, parquet: bool = False) -> dict[str, Any]:
    """The bare cost: pyarrow parse, predict on the arrays, pyarrow write; each phase timed on its own.

    ``parquet``: ``pyarrow.parquet.read_table`` of the Parquet copy and ``write_table`` (zstd, as the
    pipeline's parts) instead of pyarrow's CSV reader and writer."""
    import joblib
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    model = joblib.load(model_dir() / "model.joblib")
    features = [name for name in model[0].feature_names_in_ if name in _used_columns(model)]

    t0 = time.perf_counter()
    table = pa.concat_tables([pq.read_table(path) for path in data.parquet_files] if parquet else
                             [pacsv.read_csv(path) for path in data.files])
    t1 = time.perf_counter()
    frame = table.select(features).to_pandas()
    t2 = time.perf_counter()
    proba = np.asarray(model.predict_proba(frame))[:, 1]
    t3 = time.perf_counter()
    del frame
    result = table.append_column("churn_probability", pa.array(proba))
    if parquet:
        pq.write_table(result, out / "predictions.parquet", compression="zstd")
    else:
        pacsv.write_csv(result, out / "predictions.csv", write_options=pacsv.WriteOptions(quoting_style="needed"))
    t4 = time.perf_counter()
    phases = {"parse": t1 - t0, "to_pandas": t2 - t1, "predict": t3 - t2, "write": t4 - t3}
    return {
        "wall_s": sum(phases.values()),
        "rows": table.num_rows,
        "phases": phases,
        "features": features,
        **({"compression": "zstd"} if parquet else {}),
        "predict_threads": "scikit-learn default (all cores)",
    }


def _used_columns(model: Any) -> set[str]:
    """The input columns the fitted ColumnTransformer reads (the rest are dropped)."""
    used: set[str] = set()
    for _name, transformer, columns in model[0].transformers_:
        if transformer != "drop":
            used.update(columns)
    return used


def run_shard(data: Dataset, out: Path, shards: int, *, numpy_loaded: bool = False, validation: str | None = None
              ) -> dict[str, Any]:
    """The shard step alone, over the one concatenated file, into exactly ``shards`` shards, with the churn
    DAG's record checks (``shard.validation``) unless ``validation`` says otherwise.

    As in a fresh Airflow task, numpy is not loaded: the step counts records with numpy only
    for partitions of at least ``NUMPY_MIN_BYTES`` (and then its import is timed). With
    ``numpy_loaded`` numpy is imported before the clock starts, as if the process had it already.
    """
    if numpy_loaded:
        import numpy as np  # noqa: F401
    from airflow_bt.steps.shard import shard_partition
    from airflow_bt.storage import for_uri

    settings = pipeline_settings()
    source = file_uri(data.concat_dir) + "/"
    root = file_uri(out)
    store = for_uri(source)
    size_mb = data.concat_file.stat().st_size / 1024 / 1024
    started = time.perf_counter()
    summary = shard_partition(store, source, f"{root}/shard-1/", f"{root}/shard-1.manifest",
                              f"{root}/shard-1.json", data_format="csv",
                              target_shard_mb=size_mb / shards * 1.01, min_shards=shards, max_shards=shards,
                              validation=validation or settings["validation"],
                              max_record_bytes=settings["max_payload_mb"] * 1024 * 1024, logger=_logger(False))
    seconds = time.perf_counter() - started
    if summary["records"] != data.rows or len(summary["shards"]) != shards:
        raise RuntimeError(f"sharded {summary['records']} rows into {len(summary['shards'])} shards")
    return {"wall_s": seconds, "rows": summary["records"], "shards": len(summary["shards"]),
            "numpy_loaded": "numpy" in sys.modules, "validation": validation or settings["validation"]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("contender", choices=["pipeline", "naive", "floor", "shard", "pipeline_parquet",
                                              "naive_parquet", "floor_parquet"])
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True, help="an empty folder for the outputs")
    parser.add_argument("--shards", type=int, default=2, help="shard: how many shards")
    parser.add_argument("--numpy-loaded", action="store_true",
                        help="shard: import numpy before the clock starts (the step then counts with it)")
    parser.add_argument("--validation", choices=["standard", "fast", "strict"], default=None,
                        help="shard: record checks (default: the churn DAG's shard.validation)")
    parser.add_argument("--instances", type=int, default=None, help="pipeline: InstanceCount (default: config)")
    parser.add_argument("--concurrency", type=int, default=None,
                        help="pipeline: MaxConcurrentTransforms (default: config)")
    parser.add_argument("--publish-rounds", type=int, default=0,
                        help="pipeline: publish again N times without and N times with prediction checks")
    parser.add_argument("--table-rounds", type=int, default=0,
                        help="pipeline: then publish (Parquet) N times without and N times with the Iceberg table "
                             "commit, after one untimed-in-the-medians publication that creates the table")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    data = parquet_dataset(args.rows) if args.contender.endswith("_parquet") else dataset(args.rows)
    if args.contender in ("pipeline", "pipeline_parquet"):
        result = run_pipeline(data, args.out, verbose=args.verbose, instance_count=args.instances,
                              max_concurrent_transforms=args.concurrency,
                              parquet=args.contender == "pipeline_parquet", publish_rounds=args.publish_rounds,
                              table_rounds=args.table_rounds)
    elif args.contender in ("naive", "naive_parquet"):
        result = run_naive(data, args.out, parquet=args.contender == "naive_parquet")
    elif args.contender in ("floor", "floor_parquet"):
        result = run_floor(data, args.out, parquet=args.contender == "floor_parquet")
    else:
        result = run_shard(data, args.out, args.shards, numpy_loaded=args.numpy_loaded, validation=args.validation)
    result["vmhwm_kb"] = own_peak_kb()
    print(RESULT_PREFIX + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
