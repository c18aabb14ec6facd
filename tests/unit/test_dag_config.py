from __future__ import annotations

from pathlib import Path

import pytest

from airflow_bt.dag_factory.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    return path


GOOD = """\
dag_id: d1
model: churn
start_date: 2026-06-01
transform:
  model_name: churn-model
"""


def test_shipped_config_is_valid():
    config = load_config(REPO / "dags/configs/churn.yaml")
    assert config["dag_id"] == "churn_nightly_scoring"
    assert config["postprocess"]["prediction_columns"] == ["churn_probability"]


def test_defaults_fill_in(tmp_path):
    config = load_config(write(tmp_path, GOOD))
    assert config["transform"]["instance_count"] == 1 and config["schedule"]["run_at"] == "02:00"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (GOOD + "  instance_count: two\n", r"bad\.yaml:6: setting `transform.instance_count`: expected int"),
        (GOOD + "  backend: emr\n", r"bad\.yaml:6: setting `transform.backend`: must be one of local, sagemaker"),
        (GOOD + "retries: -1\n", r"bad\.yaml:6: setting `retries`: must be at least 0"),
        (GOOD + "colour: blue\n", r"bad\.yaml:6: setting `colour`: unknown setting"),
        (GOOD.replace("model: churn\n", ""), r"setting `model`: required setting is missing"),
        (GOOD + "schedule:\n  run_at: '25:00'\n", r"bad\.yaml:7: setting `schedule.run_at`"),
        (GOOD + "transform: [1]\n", r"not valid YAML|setting `transform`"),
        ("dag_id: x\nstart_date: !!python/object:os.system ls\n", r"not valid YAML"),
    ],
)
def test_errors_name_file_line_and_setting(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text))


def test_the_request_settings_reach_the_transform_task(tmp_path):
    from airflow_bt.dag_factory.factory import build_dag

    text = GOOD + ("  input_filter: '$[1:]'\n  output_filter: '$[0]'\n  model_client_config: {max_retries: 1}\n"
                   "  tags: {team: risk}\n  kms_key_id: k1\n  volume_kms_key_id: k2\n"
                   "  vpc_config: {security_group_ids: [sg-1], subnets: [s-1]}\n  enable_network_isolation: true\n")
    dag = build_dag(load_config(write(tmp_path, text)), default_root=tmp_path.as_uri())
    task = dag.get_task("transform")
    assert (task.input_filter, task.output_filter, task.model_client_config, task.tags) == (
        "$[1:]", "$[0]", {"max_retries": 1}, {"team": "risk"})
    assert (task.kms_key_id, task.volume_kms_key_id, task.enable_network_isolation) == ("k1", "k2", True)
    assert task.vpc_config == {"security_group_ids": ["sg-1"], "subnets": ["s-1"]}
    with pytest.raises(ConfigError, match=r"setting `transform.enable_network_isolation`: expected bool"):
        load_config(write(tmp_path, GOOD + "  enable_network_isolation: maybe\n"))


def test_data_capture_and_a_model_package_reach_the_transform_task(tmp_path):
    from airflow_bt.dag_factory.factory import build_dag

    text = GOOD + ("  model_package_name: churn-approved\n"
                   "  data_capture: {destination_s3_uri: 's3://b/capture/', kms_key_id: alias/c}\n")
    task = build_dag(load_config(write(tmp_path, text)), default_root=tmp_path.as_uri()).get_task("transform")
    assert task.model_package_name == "churn-approved"
    assert task.data_capture == {"destination_s3_uri": "s3://b/capture/", "kms_key_id": "alias/c"}


@pytest.mark.parametrize(("extra", "message"), [
    ("  data_capture: {kms_key_id: k}\n", r"bad\.yaml:6: setting `transform.data_capture`: data_capture needs "
                                          r"destination_s3_uri"),
    ("  model_client_config: {timeout: 3}\n", r"bad\.yaml:6: setting `transform.model_client_config`: "
                                              r"model_client_config: unknown setting"),
    ("  vpc_config: {subnets: [s]}\n", r"bad\.yaml:6: setting `transform.vpc_config`: vpc_config needs exactly"),
    ("  model_package_name: churn\n  model_data_url: s3://b/m.tar.gz\n",
     r"bad\.yaml:7: setting `transform.model_data_url`: remove it, or model_package_name"),
])
def test_request_settings_are_checked_when_the_config_is_parsed(tmp_path, extra, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, GOOD + extra))


def test_the_shipped_parquet_config_sends_every_column_but_the_id():
    config = load_config(REPO / "dags/configs/churn_parquet.yaml")
    assert config["input"]["format"] == "parquet" and config["postprocess"]["format"] == "parquet"
    from airflow_bt.demo.data import COLUMNS

    assert config["input"]["columns"] == [c for c in COLUMNS if c != "customer_id"]
    assert config["transform"]["environment"]["CHURN_INPUT_COLUMNS"] == ",".join(config["input"]["columns"])


@pytest.mark.parametrize(("extra", "message"), [
    ("input:\n  format: csv\n  columns: [a, b]\n", r"bad\.yaml:8: setting `input.columns`: applies to Parquet input"),
    ("input:\n  columns: [a, a]\n", r"bad\.yaml:7: setting `input.columns`: a name appears twice"),
    ("postprocess:\n  prediction_columns: [p]\n  prediction_types: {q: float64}\n",
     r"bad\.yaml:8: setting `postprocess.prediction_types`: column 'q' is not one of \['p'\]"),
    ("postprocess:\n  schema: {amount: money}\n",
     r"bad\.yaml:7: setting `postprocess.schema`: column 'amount': unknown type 'money'"),
    ("postprocess:\n  format: orc\n", r"bad\.yaml:7: setting `postprocess.format`: must be one of csv, jsonl, parquet"),
])
def test_format_settings_are_checked_when_the_config_is_parsed(tmp_path, extra, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, GOOD + extra))
