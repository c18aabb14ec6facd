"""Security basics: nothing reaches outside its prefix, the local service listens on loopback, YAML stays data."""

from __future__ import annotations

import pytest

from airflow_bt.cli import build_parser
from airflow_bt.dag_factory.config import ConfigError, load_config
from airflow_bt.storage import for_uri
from airflow_bt.storage.uris import file_path, join_uri
from airflow_bt.transform.plan import InputError, parse_manifest


@pytest.mark.parametrize("key", ["../etc/passwd", "a/../../b", "a/.."])
def test_a_key_with_dotdot_cannot_be_joined_onto_a_prefix(key):
    with pytest.raises(ValueError, match=r"'\.\.' segment"):
        join_uri("file:///data/work/", key)


def test_file_uris_with_dotdot_are_refused_before_any_io(tmp_path):
    (tmp_path / "secret").write_text("x")
    store = for_uri(tmp_path.as_uri())
    sneaky = f"{tmp_path.as_uri()}/out/../secret"
    with pytest.raises(ValueError, match=r"must not contain '\.\.' segments"):
        file_path(sneaky)
    with pytest.raises(ValueError):
        store.read_bytes(sneaky)
    with pytest.raises(ValueError):
        store.put_bytes(f"{tmp_path.as_uri()}/out/../../escaped", b"x")
    assert not (tmp_path.parent / "escaped").exists()


@pytest.mark.parametrize("key", ["../x.csv", "/abs.csv", "a/../../x.csv"])
def test_a_manifest_entry_cannot_escape_its_prefix(key):
    with pytest.raises(InputError, match=r"must be relative and must not contain '\.\.'"):
        parse_manifest(f'[{{"prefix": "file:///data/"}}, "ok.csv", "{key}"]'.encode(), "file:///m.json")


def test_local_sagemaker_listens_on_loopback_unless_told_otherwise():
    args = build_parser().parse_args(["local-sagemaker"])
    assert args.host == "127.0.0.1"


def test_local_sagemaker_reads_no_host_file_and_runs_no_command_unless_told_to():
    args = build_parser().parse_args(["local-sagemaker"])
    assert args.allow_file_uris is False and args.allow_serve_commands is False
    opted_in = build_parser().parse_args(["local-sagemaker", "--allow-file-uris", "--allow-serve-commands"])
    assert opted_in.allow_file_uris and opted_in.allow_serve_commands


def test_dag_configs_are_data_not_code(tmp_path):
    config = tmp_path / "evil.yaml"
    config.write_text("dag_id: !!python/object/apply:os.system ['touch pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(config)
    assert not (tmp_path / "pwned").exists()
