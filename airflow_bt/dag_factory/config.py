"""Load and validate a scoring DAG's YAML config; errors name the file, the line and the setting."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A DAG config is invalid; the message says where and what to change."""


@dataclass(frozen=True)
class Field:
    kind: type | tuple[type, ...]
    default: Any = None
    required: bool = False
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    pattern: str | None = None


_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
_MODEL = r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$"

SCHEMA: dict[str, Any] = {
    "dag_id": Field(str, required=True, pattern=_NAME),
    "model": Field(str, required=True, pattern=r"^[a-z0-9][a-z0-9_-]*$"),
    "description": Field(str, default=""),
    "owner": Field(str, default="airflow_bt"),
    "start_date": Field(dt.date, required=True),
    "catchup": Field(bool, default=False),
    "max_active_runs": Field(int, default=1, minimum=1),
    "retries": Field(int, default=2, minimum=0),
    "retry_delay_minutes": Field((int, float), default=5, minimum=0),
    "tags": Field(list, default=[]),
    "root_uri": Field(str, default=None),
    "aws_conn_id": Field(str, default="aws_default"),
    "schedule": {
        "run_at": Field(str, default="02:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d$"),
        "timezone": Field(str, default="UTC"),
    },
    "paths": {
        "input": Field(str, default="{{ params.root_uri }}/input/{model}/dt={{ ds }}/"),
        "work": Field(str, default="{{ params.root_uri }}/work/{model}/dt={{ ds }}/"),
        "output": Field(str, default="{{ params.root_uri }}/output/{model}/dt={{ ds }}/"),
    },
    "input": {
        "format": Field(str, default="auto", choices=("auto", "csv", "jsonl", "parquet")),
        # Parquet input: the columns sent to the model, in order (default all); every column is published
        "columns": Field(list, default=None),
        "wait_for_success_marker": Field(bool, default=False),
        "poke_interval_seconds": Field(int, default=60, minimum=1),
        "timeout_minutes": Field((int, float), default=360, minimum=0),
    },
    "shard": {
        "target_shard_mb": Field((int, float), default=64, minimum=0.001),
        "max_shards": Field(int, default=1000, minimum=1),
        "validation": Field(str, default="standard", choices=("standard", "fast", "strict")),
        "on_bad_record": Field(str, default="fail", choices=("fail", "quarantine")),
        "max_bad_records": Field(int, default=1000, minimum=0),
        # Parquet input: the shards' content type for the container (text input is sharded as it is)
        "format": Field(str, default=None, choices=("csv", "jsonl")),
    },
    "transform": {
        "backend": Field(str, default="local", choices=("local", "sagemaker")),
        "model_name": Field(str, required=True, pattern=_MODEL),
        "model_data_url": Field(str, default=None),
        "image": Field(str, default=None),
        "model_environment": Field(dict, default={}),
        "instance_type": Field(str, default="ml.m5.xlarge"),
        "instance_count": Field(int, default=1, minimum=1),
        "batch_strategy": Field(str, default="MultiRecord", choices=("MultiRecord", "SingleRecord")),
        "max_payload_mb": Field(int, default=6, minimum=0),
        "max_concurrent_transforms": Field(int, default=None, minimum=0),
        "accept": Field(str, default="text/csv"),
        "environment": Field(dict, default={}),
        "dead_letter": Field(bool, default=False),
        "dead_letter_max_records": Field(int, default=100, minimum=0),
        # the rest of CreateTransformJob / CreateModel (both backends carry them; README, config reference)
        "input_filter": Field(str, default=None),
        "output_filter": Field(str, default=None),
        "model_client_config": Field(dict, default=None),
        "tags": Field(dict, default={}),
        "kms_key_id": Field(str, default=None),
        "volume_kms_key_id": Field(str, default=None),
        "vpc_config": Field(dict, default=None),
        "enable_network_isolation": Field(bool, default=False),
        "data_capture": Field(dict, default=None),  # {destination_s3_uri, kms_key_id}
        "model_package_name": Field(str, default=None),  # a Model Registry package instead of image + artifact
        # backend sagemaker: model creation, waiting, cost
        "create_model": Field(bool, default=True),
        "execution_role_arn": Field(str, default=None),
        "deferrable": Field(bool, default=None),
        "check_interval_seconds": Field((int, float), default=30, minimum=0.01),
        "timeout_minutes": Field((int, float), default=None, minimum=0.01),
        "price_per_instance_hour": Field((int, float), default=None, minimum=0),
    },
    "postprocess": {
        "prediction_columns": Field(list, default=["prediction"]),
        "format": Field(str, default=None, choices=("csv", "jsonl", "parquet")),  # default: the input's
        "schema": Field(dict, default={}),  # text input, typed output: column -> type (the rest inferred)
        "prediction_types": Field(dict, default={}),  # prediction column -> type (default float64)
        "compression": Field(str, default="zstd", choices=("zstd", "snappy", "none")),
        "checks": Field(dict, default=None),  # prediction checks before _SUCCESS (README, "Prediction checks")
    },
    # publication as a table commit (README, "Tables"): the pointers engines follow, moved with _LATEST.json
    "publish": {
        "table": Field(dict, default=None),  # {identifier: namespace.table, catalog: {pyiceberg properties}}
        "glue_table": Field(dict, default=None),  # {database, table}: a Glue/Hive partition per day
    },
    # notifiers called when a run fails or succeeds, a task retries, or a run misses its deadline
    "alerts": Field(dict, default=None),
    # "published by" HH:MM in schedule.timezone, on the day the run starts (after schedule.run_at)
    "deadline": Field(str, default=None, pattern=r"^([01]\d|2[0-3]):[0-5]\d$"),
    "retention": {
        # a final task deletes work/ run folders of published days older than this (off by default)
        "work_days": Field((int, float), default=None, minimum=0),
    },
}


def _lines(node: yaml.Node, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], int]:
    """Map each key path of the YAML document to its 1-based line number."""
    found: dict[tuple[str, ...], int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key_path = (*path, str(key_node.value))
            found[key_path] = key_node.start_mark.line + 1
            found.update(_lines(value_node, key_path))
    return found


def _check(value: Any, spec: Field, where: str) -> Any:
    kinds = spec.kind if isinstance(spec.kind, tuple) else (spec.kind,)
    if spec.kind is dt.date and isinstance(value, str):
        try:
            value = dt.date.fromisoformat(value)
        except ValueError:
            raise ConfigError(f"{where}: expected a date YYYY-MM-DD, got {value!r}") from None
    if isinstance(value, bool) and bool not in kinds:
        raise ConfigError(f"{where}: expected {'/'.join(k.__name__ for k in kinds)}, got {value!r}")
    if not isinstance(value, kinds):
        raise ConfigError(f"{where}: expected {'/'.join(k.__name__ for k in kinds)}, got {value!r}")
    if spec.choices is not None and value not in spec.choices:
        raise ConfigError(f"{where}: must be one of {', '.join(map(str, spec.choices))}, got {value!r}")
    if spec.minimum is not None and value < spec.minimum:  # type: ignore[operator]
        raise ConfigError(f"{where}: must be at least {spec.minimum}, got {value!r}")
    if spec.pattern is not None and not re.match(spec.pattern, str(value)):
        raise ConfigError(f"{where}: {value!r} does not match {spec.pattern}")
    return value


def _validate(data: Any, schema: dict[str, Any], path: tuple[str, ...], source: str,
              lines: dict[tuple[str, ...], int]) -> dict[str, Any]:
    def where(key_path: tuple[str, ...]) -> str:
        return _at(source, lines, *key_path)

    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where(path)}: expected a mapping of settings, got {type(data).__name__}")
    unknown = sorted(set(data) - set(schema))
    if unknown:
        raise ConfigError(f"{where((*path, str(unknown[0])))}: unknown setting; expected one of "
                          f"{', '.join(sorted(schema))}")
    out: dict[str, Any] = {}
    for key, spec in schema.items():
        key_path = (*path, key)
        if isinstance(spec, dict):
            out[key] = _validate(data.get(key), spec, key_path, source, lines)
        elif key not in data or data[key] is None:
            if spec.required:
                raise ConfigError(f"{where(key_path)}: required setting is missing")
            out[key] = spec.default.copy() if isinstance(spec.default, (list, dict)) else spec.default
        else:
            out[key] = _check(data[key], spec, where(key_path))
    return out


def load_config(path: str | Path) -> dict[str, Any]:
    """Load ``path`` safely (``yaml.SafeLoader``) and return the validated settings with defaults."""
    source = str(path)
    text = Path(path).read_text()
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    lines = _lines(node) if node is not None else {}
    config = _validate(data, SCHEMA, (), source, lines)
    _check_columns(config, source, lines)
    _check_request_settings(config, source, lines)
    _check_publish(config, source, lines)
    if config["alerts"] is not None:
        from airflow_bt.dag_factory.alerts import alerts_error

        error = alerts_error(config["alerts"])
        if error:
            raise ConfigError(f"{_at(source, lines, 'alerts')}: {error}")
    if config["deadline"] is not None:
        if config["deadline"] <= config["schedule"]["run_at"]:
            raise ConfigError(f"{_at(source, lines, 'deadline')}: {config['deadline']} is not after "
                              f"schedule.run_at {config['schedule']['run_at']}: a run starts at run_at and must "
                              "be published by the deadline, the same day")
        alerts = config["alerts"] or {}
        if not (alerts.get("on_deadline_miss") or alerts.get("on_failure")):
            raise ConfigError(f"{_at(source, lines, 'deadline')}: nobody would be told of a missed deadline; add "
                              "alerts.on_deadline_miss (or alerts.on_failure)")
    if config["retention"]["work_days"] is not None:
        for key in ("work", "output"):
            if not config["paths"][key].rstrip("/").endswith("/dt={{ ds }}"):
                raise ConfigError(f"{_at(source, lines, 'retention', 'work_days')}: retention needs paths.{key} to "
                                  f"end with /dt={{{{ ds }}}}/ (it finds a model's run folders and published days "
                                  f"by it), got {config['paths'][key]!r}")
    config["_source"] = source
    return config


def _at(source: str, lines: dict[tuple[str, ...], int], *path: str) -> str:
    line = lines.get(path) or lines.get(path[:-1])
    return f"{source}{f':{line}' if line else ''}: setting `{'.'.join(path)}`"


def _check_columns(config: dict[str, Any], source: str, lines: dict[tuple[str, ...], int]) -> None:
    """Column names and types: names are non-empty strings, types are ones the publish step can write."""
    from airflow_bt.records.arrow_types import type_names_error

    post = config["postprocess"]
    for section, key in (("postprocess", "prediction_columns"), ("input", "columns")):
        names = config[section][key] or []
        if not all(isinstance(n, str) and n for n in names):
            raise ConfigError(f"{_at(source, lines, section, key)}: names must be non-empty strings")
        if len(set(names)) != len(names):
            raise ConfigError(f"{_at(source, lines, section, key)}: a name appears twice")
    if config["input"]["columns"] and config["input"]["format"] in ("csv", "jsonl"):
        raise ConfigError(f"{_at(source, lines, 'input', 'columns')}: applies to Parquet input (input.format: "
                          "parquet); send fewer columns of text input with transform.input_filter")
    if post["checks"] is not None:
        from airflow_bt.steps.checks import checks_error

        error = checks_error(post["checks"], post["prediction_columns"])
        if error:
            raise ConfigError(f"{_at(source, lines, 'postprocess', 'checks')}: {error}")
    for key, allowed in (("prediction_types", post["prediction_columns"]), ("schema", None)):
        error = type_names_error(post[key], allowed=allowed)
        if error:
            raise ConfigError(f"{_at(source, lines, 'postprocess', key)}: {error}")


def _check_request_settings(config: dict[str, Any], source: str, lines: dict[tuple[str, ...], int]) -> None:
    """The transform settings that become parts of the request, shaped as the request needs them."""
    from airflow_bt.transform.request import data_capture, model_client_config, vpc_config

    tf = config["transform"]
    for key, convert in (("model_client_config", model_client_config), ("vpc_config", vpc_config),
                         ("data_capture", data_capture)):
        try:
            convert(tf[key])
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{_at(source, lines, 'transform', key)}: {exc}") from None
    if tf["model_package_name"]:
        given = [key for key in ("model_data_url", "image") if tf[key]]
        if given:
            raise ConfigError(f"{_at(source, lines, 'transform', given[0])}: remove it, or model_package_name: "
                              "a model package names its own image and artifact")


_IDENTIFIER = r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)+$"
_GLUE_NAME = r"^[a-z0-9_]{1,255}$"


def _check_publish(config: dict[str, Any], source: str, lines: dict[tuple[str, ...], int]) -> None:
    """``publish.table`` (Iceberg) and ``publish.glue_table``: their keys, names, and the parts they need."""
    table, glue = config["publish"]["table"], config["publish"]["glue_table"]
    if table is not None:
        where = _at(source, lines, "publish", "table")
        unknown = sorted(set(table) - {"identifier", "catalog"})
        if unknown:
            raise ConfigError(f"{_at(source, lines, 'publish', 'table', unknown[0])}: unknown setting; expected "
                              "identifier, catalog")
        if not isinstance(table.get("identifier"), str) or not re.match(_IDENTIFIER, table["identifier"]):
            raise ConfigError(f"{_at(source, lines, 'publish', 'table', 'identifier')}: expected namespace.table "
                              f"(letters, digits, _), got {table.get('identifier')!r}")
        catalog = table.get("catalog")
        if catalog is not None and (not isinstance(catalog, dict) or not all(isinstance(k, str) for k in catalog)):
            raise ConfigError(f"{_at(source, lines, 'publish', 'table', 'catalog')}: expected a mapping of pyiceberg "
                              "catalog properties (type, uri, warehouse, ...)")
        output = config["postprocess"]["format"] or config["input"]["format"]
        if output != "parquet":
            raise ConfigError(f"{where}: an Iceberg table registers the attempt's Parquet parts as they are; set "
                              f"postprocess.format: parquet (the parts are {output or 'the input format'})")
    if glue is not None:
        for key in ("database", "table"):
            if not isinstance(glue.get(key), str) or not re.match(_GLUE_NAME, glue[key]):
                raise ConfigError(f"{_at(source, lines, 'publish', 'glue_table', key)}: expected a Glue name "
                                  f"(lower-case letters, digits, _), got {glue.get(key)!r}")
        unknown = sorted(set(glue) - {"database", "table"})
        if unknown:
            raise ConfigError(f"{_at(source, lines, 'publish', 'glue_table', unknown[0])}: unknown setting; "
                              "expected database, table")
