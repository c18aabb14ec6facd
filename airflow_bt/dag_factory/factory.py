"""Build one nightly scoring DAG per config: wait for input -> shard -> transform -> publish."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

from airflow_bt.compat import DAG, Asset, Param
from airflow_bt.dag_factory.alerts import alerts_for, deadline_settings
from airflow_bt.dag_factory.config import load_config
from airflow_bt.operators.postprocess import PublishPredictionsOperator
from airflow_bt.operators.retention import ScratchRetentionOperator
from airflow_bt.operators.shard import ShardInputOperator
from airflow_bt.operators.transform import DEFAULT_IMAGE, BatchTransformOperator
from airflow_bt.sensors.input import InputPartitionSensor
from airflow_bt.timetables.nightly import NightlyAfterCloseTimetable

ROOT_ENV = "AIRFLOW_BT_ROOT"

DOC_MD = """\
### {dag_id}: nightly batch scoring of `{model}`

Scores one calendar day per run: the run whose logical date is `D` reads
`input/{model}/dt=D/`, shards it, runs a Batch Transform job (backend `{backend}` by default),
joins the predictions onto the rows and publishes a new attempt below `output/{model}/dt=D/`.
`_LATEST.json` there points at the newest complete attempt; earlier attempts are never changed.

* Schedule: {schedule}
* Config: `{source}`
* Trigger with params to override the data root, backend or instance count.
"""


def resolve_root(config: dict[str, Any], default_root: str) -> str:
    """Data root: ``$AIRFLOW_BT_ROOT``, else the config's ``root_uri``, else ``default_root``."""
    return (os.environ.get(ROOT_ENV) or config.get("root_uri") or default_root).rstrip("/")


BACKEND_ENV = "AIRFLOW_BT_BACKEND"


def resolve_backend(config: dict[str, Any]) -> str:
    """Default transform backend: ``$AIRFLOW_BT_BACKEND`` (the compose stack sets ``sagemaker``), else the config's."""
    backend = os.environ.get(BACKEND_ENV) or config["transform"]["backend"]
    if backend not in ("local", "sagemaker"):
        raise ValueError(f"${BACKEND_ENV} must be 'local' or 'sagemaker', got {backend!r}")
    return str(backend)


def output_asset(config: dict[str, Any], default_root: str) -> Asset:
    """The Asset (Dataset on Airflow 2) a scoring DAG updates on each publication.

    Its URI is the model's output root, ``<data root>/output/<model>``; schedule a downstream
    DAG on it (``schedule=[Asset("file:///.../output/churn")]``) to run after every publication,
    then follow ``dt=<ds>/_LATEST.json`` to the newest attempt.
    """
    return Asset(f"{resolve_root(config, default_root)}/output/{config['model']}")


def table_assets(config: dict[str, Any]) -> list[Asset]:
    """One Asset per table a publication commits to, ``x-iceberg://<catalog>/<namespace>/<table>`` and
    ``x-glue://<database>/<table>``: schedule a downstream DAG on the table it reads. (``x-`` is Airflow's
    prefix for user-defined schemes; another scheme would load every provider's URI handlers at parse time.)"""
    assets = []
    table, glue = config["publish"]["table"], config["publish"]["glue_table"]
    if table:
        catalog = (table.get("catalog") or {}).get("name", "airflow_bt")
        assets.append(Asset(f"x-iceberg://{catalog}/{table['identifier'].replace('.', '/')}"))
    if glue:
        assets.append(Asset(f"x-glue://{glue['database']}/{glue['table']}"))
    return assets


#: The transform settings passed to the operator as they are (its parameters of the same names).
REQUEST_SETTINGS = ("input_filter", "output_filter", "model_client_config", "tags", "kms_key_id", "volume_kms_key_id",
                    "vpc_config", "enable_network_isolation", "data_capture", "model_package_name")


def _deadline_after_start(config: dict[str, Any]) -> dt.timedelta:
    """From ``schedule.run_at`` to ``deadline``, wall-clock times of the same day."""
    start = dt.datetime.strptime(config["schedule"]["run_at"], "%H:%M")
    return dt.datetime.strptime(config["deadline"], "%H:%M") - start


def build_dag(config: dict[str, Any], *, default_root: str) -> DAG:
    """The scoring DAG described by a validated config (see :func:`load_config`)."""
    model = config["model"]
    tf = config["transform"]
    paths = {k: v.replace("{model}", model) for k, v in config["paths"].items()}
    timetable = NightlyAfterCloseTimetable(**config["schedule"])
    start = config["start_date"]
    dag = DAG(
        dag_id=config["dag_id"],
        description=config["description"] or f"Nightly batch scoring of {model}",
        schedule=timetable,
        start_date=timetable.label(start),  # the first scored day's label, midnight UTC (see the timetable)
        catchup=config["catchup"],
        max_active_runs=config["max_active_runs"],
        tags=["airflow_bt", "batch-scoring", *config["tags"]],
        doc_md=DOC_MD.format(dag_id=config["dag_id"], model=model, backend=resolve_backend(config),
                             schedule=timetable.summary, source=config["_source"]),
        default_args={
            "owner": config["owner"],
            "retries": config["retries"],
            "retry_delay": dt.timedelta(minutes=config["retry_delay_minutes"]),
            **({"on_retry_callback": retry} if (retry := alerts_for(config["alerts"], "on_retry")) else {}),
        },
        # Alert objects are callables of the context (mypy cannot see a list of them as Airflow's Callable list)
        on_failure_callback=alerts_for(config["alerts"], "on_failure") or None,  # type: ignore[arg-type]
        on_success_callback=alerts_for(config["alerts"], "on_success") or None,  # type: ignore[arg-type]
        **(deadline_settings(config["alerts"], _deadline_after_start(config)) if config["deadline"] else {}),
        params={
            "root_uri": Param(resolve_root(config, default_root), type="string",
                              description="Data root (file:///... or s3://bucket/prefix)"),
            "backend": Param(resolve_backend(config), type="string", enum=["local", "sagemaker"],
                             description="Where the transform runs"),
            "instance_count": Param(tf["instance_count"], type="integer", minimum=1,
                                    description="Transform instances (capped at the shard count)"),
        },
        render_template_as_native_obj=False,
    )
    common = {"aws_conn_id": config["aws_conn_id"], "dag": dag}
    wait = InputPartitionSensor(
        task_id="wait_for_input",
        input_uri=paths["input"],
        wait_for_success_marker=config["input"]["wait_for_success_marker"],
        poke_interval=config["input"]["poke_interval_seconds"],
        timeout=config["input"]["timeout_minutes"] * 60,
        mode="reschedule",
        **common,
    )
    shard = ShardInputOperator(
        task_id="shard",
        input_uri=paths["input"],
        work_uri=paths["work"],
        data_format=config["input"]["format"],
        columns=config["input"]["columns"],
        shard_format=config["shard"]["format"],
        target_shard_mb=config["shard"]["target_shard_mb"],
        min_shards="{{ params.instance_count }}",
        max_shards=config["shard"]["max_shards"],
        validation=config["shard"]["validation"],
        on_bad_record=config["shard"]["on_bad_record"],
        max_bad_records=config["shard"]["max_bad_records"],
        max_record_bytes=tf["max_payload_mb"] * 1024 * 1024,
        **common,
    )
    transform = BatchTransformOperator(
        task_id="transform",
        shards=shard.output,
        backend="{{ params.backend }}",
        model_name=tf["model_name"],
        model_data_url=tf["model_data_url"],
        image=tf["image"] or DEFAULT_IMAGE,
        model_environment=tf["model_environment"],
        instance_type=tf["instance_type"],
        instance_count="{{ params.instance_count }}",
        batch_strategy=tf["batch_strategy"],
        max_payload_mb=tf["max_payload_mb"],
        max_concurrent_transforms=tf["max_concurrent_transforms"],
        dead_letter=tf["dead_letter"],
        dead_letter_max_records=tf["dead_letter_max_records"],
        accept=tf["accept"],
        environment=tf["environment"],
        job_name_prefix=model,
        create_model=tf["create_model"],
        execution_role_arn=tf["execution_role_arn"],
        check_interval=tf["check_interval_seconds"],
        max_ingestion_time=tf["timeout_minutes"] * 60 if tf["timeout_minutes"] else None,
        price_per_instance_hour=tf["price_per_instance_hour"],
        **{key: tf[key] for key in REQUEST_SETTINGS},
        **({"deferrable": tf["deferrable"]} if tf["deferrable"] is not None else {}),
        **common,
    )
    publish = PublishPredictionsOperator(
        task_id="publish",
        shards=shard.output,
        transform=transform.output,
        output_uri=paths["output"],
        prediction_columns=config["postprocess"]["prediction_columns"],
        output_format=config["postprocess"]["format"],
        schema=config["postprocess"]["schema"],
        prediction_types=config["postprocess"]["prediction_types"],
        compression=config["postprocess"]["compression"],
        checks=config["postprocess"]["checks"],
        table=config["publish"]["table"],
        glue_table=config["publish"]["glue_table"],
        root_uri="{{ params.root_uri }}",
        model_name=tf["model_name"],
        model_data_url=tf["model_data_url"],
        outlets=[output_asset(config, default_root), *table_assets(config)],
        **common,
    )
    wait >> shard >> transform >> publish
    if config["retention"]["work_days"] is not None:
        day = "dt={{ ds }}"
        publish >> ScratchRetentionOperator(
            task_id="retention",
            work_root=paths["work"].rstrip("/").removesuffix(day),
            output_root=paths["output"].rstrip("/").removesuffix(day),
            work_days=config["retention"]["work_days"],
            **common,
        )
    return dag


def build_dags(config_dir: str | Path, *, default_root: str) -> dict[str, DAG]:
    """One DAG per ``*.yaml``/``*.yml`` file in ``config_dir``, keyed by dag_id."""
    dags: dict[str, DAG] = {}
    for path in sorted(Path(config_dir).glob("*.y*ml")):
        dag = build_dag(load_config(path), default_root=default_root)
        if dag.dag_id in dags:
            raise ValueError(f"{path}: dag_id {dag.dag_id!r} is already used by another config")
        dags[dag.dag_id] = dag
    return dags
