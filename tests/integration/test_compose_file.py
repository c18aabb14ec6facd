"""The docker-compose stack's file, checked without a Docker engine.

* Syntax: ``docker-compose config -q`` (Debian's docker-compose, installed by ``make test`` when
  missing; the test is skipped, with the reason printed, when it is not there).
* Contract: the services and their start order, health checks, the aws_default connection's
  endpoints against the services' names and ports, bind mounts that exist in the repo, every
  variable the file needs defined in ``.env.example``, and no secret in the file or the image.
* README: its docker-compose section names only services, profiles, ports, variables and
  ``airflow``/``airflow-bt`` commands (and their options) that the file and the image provide.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from airflow_env import REPO
from compose_file import (
    COMPOSE_FILE,
    ENV_EXAMPLE,
    bind_mounts,
    command,
    container_ports,
    environment,
    load,
    named_volumes,
    read_env_file,
    references,
)

AIRFLOW_SERVICES = ("airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                    "airflow-triggerer")
LONG_RUNNING = ("postgres", "minio", "local-sagemaker", "airflow-apiserver", "airflow-scheduler",
                "airflow-dag-processor", "airflow-triggerer")
ONE_SHOT = ("minio-init", "airflow-init")
PROFILED = ("model-container",)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load()


@pytest.fixture(scope="module")
def services(compose) -> dict[str, dict[str, Any]]:
    return dict(compose["services"])


def _docker_compose() -> str:
    exe = shutil.which("docker-compose")
    if exe is None:
        reason = ("docker-compose is not installed (`make test` installs Debian's package when apt-get runs "
                  "as root): cannot run `docker-compose config -q`")
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    return exe


def test_docker_compose_config_accepts_the_file():
    exe = _docker_compose()
    version = subprocess.run([exe, "version", "--short"], capture_output=True, text=True, check=False).stdout
    proc = subprocess.run([exe, "--project-directory", str(REPO), "-f", str(COMPOSE_FILE),
                           "--env-file", str(ENV_EXAMPLE), "config", "-q"],
                          capture_output=True, text=True, check=False, timeout=60)
    assert proc.returncode == 0, f"docker-compose {version.strip()} config -q:\n{proc.stdout}\n{proc.stderr}"
    # with the optional profile too
    proc = subprocess.run([exe, "--project-directory", str(REPO), "-f", str(COMPOSE_FILE),
                           "--env-file", str(ENV_EXAMPLE), "--profile", "model-container", "config", "--services"],
                          capture_output=True, text=True, check=False, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "model-container" in proc.stdout.split()


def test_docker_compose_refuses_to_start_without_the_credentials(tmp_path):
    """No credential has a default in the file: without .env, Compose stops and says what to do."""
    exe = _docker_compose()
    empty = tmp_path / "empty.env"
    empty.write_text("")
    proc = subprocess.run([exe, "--project-directory", str(tmp_path), "-f", str(COMPOSE_FILE),
                           "--env-file", str(empty), "config", "-q"],
                          capture_output=True, text=True, check=False, timeout=60)
    assert proc.returncode != 0
    assert "copy .env.example to .env" in proc.stdout + proc.stderr


def _config(exe: str, env_file: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([exe, "--project-directory", str(REPO), "-f", str(COMPOSE_FILE), "--env-file",
                           str(env_file), *extra, "config"], capture_output=True, text=True, check=False, timeout=60)


def test_every_published_port_binds_loopback_unless_told_otherwise(tmp_path):
    """`cp .env.example .env; docker-compose config`: each published port is 127.0.0.1:<port> (before:
    all interfaces); AIRFLOW_BT_BIND widens them on purpose."""
    import yaml

    exe = _docker_compose()
    dotenv = tmp_path / ".env"
    shutil.copy(ENV_EXAMPLE, dotenv)
    proc = _config(exe, dotenv, "--profile", "model-container")
    assert proc.returncode == 0, proc.stderr
    published = {name: svc.get("ports") or [] for name, svc in yaml.safe_load(proc.stdout)["services"].items()}
    assert {n for n, p in published.items() if p} == {"airflow-apiserver", "minio", "local-sagemaker"}
    for name, ports in published.items():
        for port in ports:  # docker-compose v1 prints "127.0.0.1:8080:8080/tcp"
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond this machine"
    dotenv.write_text(dotenv.read_text() + "AIRFLOW_BT_BIND=0.0.0.0\n")
    wide = yaml.safe_load(_config(exe, dotenv).stdout)["services"]["airflow-apiserver"]["ports"]
    assert [str(p) for p in wide] == ["0.0.0.0:8080:8080/tcp"]


def test_the_example_secrets_are_placeholders_the_init_steps_refuse(tmp_path):
    """.env.example's secrets are `change-me`: the init steps refuse them; `make stack-env` replaces them."""
    stack_env = _script("stack_env")
    example = read_env_file()
    secret_names = {n for n in example if re.search(r"PASSWORD|SECRET|FERNET", n)}
    assert secret_names and all(example[n] == "change-me" for n in secret_names)
    refused = subprocess.run([sys.executable, str(REPO / "scripts/stack_init.py"), "check-secrets"],
                             env={**os.environ, **example}, capture_output=True, text=True, check=False)
    assert refused.returncode != 0
    assert all(n in refused.stderr for n in secret_names) and "make stack-env" in refused.stderr

    out = tmp_path / ".env"
    assert stack_env.main(["--out", str(out)]) == 0
    made = read_env_file(out)
    assert stack_env.placeholder_names(made) == [] and stat.S_IMODE(out.stat().st_mode) == 0o600
    assert {n: v for n, v in made.items() if n not in secret_names} == {
        n: v for n, v in example.items() if n not in secret_names}
    assert len({made[n] for n in secret_names}) == len(secret_names)  # each its own secret
    from cryptography.fernet import Fernet

    Fernet(made["AIRFLOW_FERNET_KEY"].encode())  # a valid Fernet key for Airflow
    again = tmp_path / "again.env"
    stack_env.main(["--out", str(again)])
    assert read_env_file(again)["MINIO_ROOT_PASSWORD"] != made["MINIO_ROOT_PASSWORD"]  # fresh every time
    before = out.read_text()
    assert stack_env.main(["--out", str(out)]) == 0 and out.read_text() == before  # never overwritten
    accepted = subprocess.run([sys.executable, str(REPO / "scripts/stack_init.py"), "check-secrets"],
                              env={**os.environ, **made}, capture_output=True, text=True, check=False)
    assert accepted.returncode == 0, accepted.stderr
    if shutil.which("docker-compose"):
        assert _config(shutil.which("docker-compose"), out).returncode == 0


def _script(name: str) -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_services_and_profiles(services):
    assert set(services) == {"postgres", "minio", "minio-init", "local-sagemaker", "model-container",
                             *AIRFLOW_SERVICES}
    for name, service in services.items():
        assert ("profiles" in service) == (name in PROFILED), name
    assert services["model-container"]["profiles"] == ["model-container"]
    assert [services[n]["command"] for n in AIRFLOW_SERVICES[1:]] == [
        "api-server", "scheduler", "dag-processor", "triggerer"]
    for name in AIRFLOW_SERVICES:
        env = environment(services[name])
        assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
        assert urlsplit(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]).hostname == "postgres"
        assert env["AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE"] == "true"
        assert env["AIRFLOW_BT_BACKEND"] == "sagemaker"
        assert env["AIRFLOW_BT_ROOT"].startswith("s3://")


def test_health_checks_and_start_order(services):
    for name in (*LONG_RUNNING, *PROFILED):
        check = services[name].get("healthcheck") or {}
        assert check.get("test"), f"{name} has no health check"
        assert services[name].get("restart") == "always", name
    for name in ONE_SHOT:
        assert "healthcheck" not in services[name], name
        assert services[name].get("restart") == "no", name

    def conditions(name: str) -> dict[str, str]:
        return {dep: spec["condition"] for dep, spec in (services[name].get("depends_on") or {}).items()}

    for name in services:
        for dep, condition in conditions(name).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            if condition == "service_healthy":
                assert services[dep].get("healthcheck"), f"{name} waits for {dep} to be healthy: it has no check"
            else:
                assert condition == "service_completed_successfully" and dep in ONE_SHOT, (name, dep, condition)
    assert conditions("airflow-init") == {"postgres": "service_healthy"}
    assert conditions("minio-init") == {"minio": "service_healthy"}
    assert conditions("local-sagemaker") == {"minio": "service_healthy"}
    for name in AIRFLOW_SERVICES[1:]:
        assert conditions(name)["postgres"] == "service_healthy"
        assert conditions(name)["airflow-init"] == "service_completed_successfully"
    # the scheduler starts runs only once the data, the model and the SageMaker endpoint are there
    assert conditions("airflow-scheduler")["minio-init"] == "service_completed_successfully"
    assert conditions("airflow-scheduler")["local-sagemaker"] == "service_healthy"
    assert conditions("airflow-scheduler")["airflow-apiserver"] == "service_healthy"  # the execution API
    assert conditions("airflow-triggerer")["local-sagemaker"] == "service_healthy"  # it polls the jobs


def _port_in_command(argv: list[str], flag: str) -> int:
    value = argv[argv.index(flag) + 1]
    return int(value.rsplit(":", 1)[-1])


def test_connection_endpoints_match_the_services(services):
    minio_port = _port_in_command(command(services["minio"]), "--address")
    sagemaker_port = _port_in_command(command(services["local-sagemaker"]), "--port")
    assert minio_port in container_ports(services["minio"])
    assert _port_in_command(command(services["minio"]), "--console-address") in container_ports(services["minio"])
    assert sagemaker_port in container_ports(services["local-sagemaker"])
    minio_env = environment(services["minio"])

    definitions = {environment(services[n])["AIRFLOW_CONN_AWS_DEFAULT"] for n in AIRFLOW_SERVICES}
    assert len(definitions) == 1, "every Airflow service has the same aws_default connection"
    conn = json.loads(definitions.pop())
    assert conn["conn_type"] == "aws"
    assert (conn["login"], conn["password"]) == (minio_env["MINIO_ROOT_USER"], minio_env["MINIO_ROOT_PASSWORD"])
    endpoints = {svc: urlsplit(cfg["endpoint_url"]) for svc, cfg in conn["extra"]["service_config"].items()}
    assert set(endpoints) == {"s3", "sagemaker"}
    assert (endpoints["s3"].hostname, endpoints["s3"].port) == ("minio", minio_port)
    assert (endpoints["sagemaker"].hostname, endpoints["sagemaker"].port) == ("local-sagemaker", sagemaker_port)

    for name in ("minio-init", "local-sagemaker"):  # boto3's standard environment, same MinIO
        env = environment(services[name])
        assert env["AWS_ENDPOINT_URL_S3"] == endpoints["s3"].geturl(), name
        assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) == (conn["login"], conn["password"])
    assert environment(services["minio-init"])["AIRFLOW_BT_ROOT"] == \
        environment(services["airflow-scheduler"])["AIRFLOW_BT_ROOT"]

    execution_api = urlsplit(environment(services["airflow-scheduler"])["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
    assert execution_api.hostname == "airflow-apiserver" and execution_api.port in container_ports(
        services["airflow-apiserver"])
    assert container_ports(services["model-container"]) == {8080}  # transform.image: http://model-container:8080


def test_mounted_paths_exist_and_the_package_mount_matches_the_editable_install(compose, services):
    dockerfile = (REPO / "Dockerfile").read_text()
    for name, service in services.items():
        for host, target in bind_mounts(service):
            assert (REPO / host).resolve().is_relative_to(REPO), (name, host)
            assert (REPO / host).exists(), f"{name} mounts {host}, which is not in the repo"
            if host.rstrip("/") == "./airflow_bt":
                assert target == "/opt/airflow_bt/airflow_bt", name
        for volume, _ in named_volumes(service):
            assert volume in (compose.get("volumes") or {}), f"{name}: volume {volume} is not declared"
    assert ("./dags", "/opt/airflow/dags") in bind_mounts(services["airflow-dag-processor"])
    for name in AIRFLOW_SERVICES[1:]:
        assert ("./airflow_bt", "/opt/airflow_bt/airflow_bt") in bind_mounts(services[name]), name
    assert "COPY --chown=airflow:0 airflow_bt/ /opt/airflow_bt/airflow_bt/" in dockerfile
    assert '--editable "/opt/airflow_bt[demo]"' in dockerfile
    # scripts the services run are mounted from the repo
    for name in ONE_SHOT:
        argv = " ".join(command(services[name]))
        for script in re.findall(r"/opt/airflow_bt/scripts/\S+", argv):
            mounts = dict((t, h) for h, t in bind_mounts(services[name]))
            host = mounts["/opt/airflow_bt/scripts"] + script[len("/opt/airflow_bt/scripts"):]
            assert (REPO / host).is_file(), (name, script)


def test_env_example_defines_every_variable_the_file_needs():
    raw = COMPOSE_FILE.read_text()
    defined = read_env_file()
    needed = {r.name for r in references(raw) if not r.has_default}
    assert needed, "the file takes its credentials from .env"
    assert needed <= set(defined), f"not in .env.example: {sorted(needed - set(defined))}"
    # and nothing secret has a default in the file: credentials are required variables
    for ref in references(raw):
        if re.search(r"PASSWORD|SECRET|_USER$", ref.name):
            assert ref.required and not ref.has_default, ref


def test_no_secret_in_the_file_or_the_image():
    import yaml

    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    for name, service in raw["services"].items():
        for key, value in environment(service).items():
            if re.search(r"PASSWORD$|SECRET|KEY_ID$|ACCESS_KEY$", key):
                assert value.startswith("${") and value.endswith("}"), f"{name}: {key} is not from .env"
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r"^FROM apache/airflow:3\.3\.2-python3\.11$", dockerfile, re.M)
    assert "apache-airflow==3.3.2" in (REPO / "constraints/airflow-3.3.2.txt").read_text().split()
    for line in dockerfile.splitlines():
        assert not re.match(r"\s*(ENV|ARG)\b.*(PASSWORD|SECRET|KEY)", line), line
        if line.startswith("COPY"):
            sources = [w for w in line.split()[1:-1] if not w.startswith("--")]
            assert sources and all((REPO / s).exists() for s in sources), line
            assert ".env" not in sources
    assert ".env" in (REPO / ".dockerignore").read_text().split()


def test_compose_file_names_the_readme_urls(services):
    """The ports the README's URLs use: UI 8080, MinIO console 9001, S3 9000, SageMaker 8089."""

    def published(name: str) -> set[int]:  # "<address>:<host port>:<container port>"
        return {int(str(p).split(":")[-2]) for p in services[name].get("ports") or []}

    assert 8080 in published("airflow-apiserver")
    assert {9000, 9001} <= published("minio")
    assert 8089 in published("local-sagemaker")


# --- the README's compose section names only what the file provides ----------------------------------

README = REPO / "README.md"
#: docker compose subcommands whose non-option words are service names (exec/run: only the first)
_SERVICE_ARGS = {"exec": 1, "run": 1, "up": None, "restart": None, "stop": None, "start": None, "logs": None,
                 "ps": None, "build": None, "down": 0, "config": 0}


def readme_compose_section(text: str) -> str:
    match = re.search(r"^## [^\n]*docker[- ]compose[^\n]*\n(.*?)(?=^## |\Z)", text, re.M | re.S | re.I)
    assert match, "README.md has no '## ... docker-compose ...' section (the stack's instructions)"
    return match.group(1)


def compose_commands(section: str) -> list[list[str]]:
    """Every ``docker compose ...`` command line (continuations joined, comments dropped), split in words."""
    commands = []
    for block in re.findall(r"```(?:bash|sh)?\n(.*?)```", section, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("#", 1)[0]
            if "docker compose " in line:
                commands.append(line[line.index("docker compose ") + len("docker compose "):].split())
    commands.extend(inline.split() for inline in re.findall(r"`docker compose ([^`]+)`", section))
    return commands


def _parse(words: list[str]) -> tuple[list[str], str, list[str], list[str]]:
    """``(profiles, subcommand, services, argv run in the service)`` of ``docker compose`` words."""
    profiles: list[str] = []
    i = 0
    while words[i].startswith("-"):
        if words[i] == "--profile":
            profiles.append(words[i + 1])
            i += 1
        i += 1
    sub, rest = words[i], words[i + 1:]
    args = [w for w in rest if not w.startswith("-")]
    limit = _SERVICE_ARGS[sub]
    if limit == 1:
        first = rest.index(args[0])
        return profiles, sub, [args[0]], rest[first + 1:]
    return profiles, sub, args if limit is None else [], []


def test_readme_compose_section_names_only_what_the_file_provides(services, tmp_path):
    section = readme_compose_section(README.read_text())
    commands = compose_commands(section)
    assert commands, "the README's compose section has no docker compose commands"
    profiles = {p for s in services.values() for p in s.get("profiles") or []}
    published = {int(str(p).split(":")[-2]) for s in services.values() for p in s.get("ports") or []}
    in_services: list[list[str]] = []
    for words in commands:
        used_profiles, _, names, argv = _parse(words)
        assert set(used_profiles) <= profiles, words
        assert set(names) <= set(services), f"docker compose {' '.join(words)}: unknown service"
        if argv:
            in_services.append(argv)
    assert {s for words in commands for s in _parse(words)[2]} >= {"airflow-scheduler", "local-sagemaker"}
    for port in re.findall(r"https?://localhost:(\d+)", section):
        assert int(port) in published, f"http://localhost:{port} is not published by any service"
    for host, port in re.findall(r"https?://([a-z][\w-]*):(\d+)", section):
        if host != "localhost":
            assert host in services and int(port) in container_ports(services[host]), f"{host}:{port}"
    env_names = set(read_env_file()) | {k for s in services.values() for k in environment(s)}
    for name in re.findall(r"`([A-Z][A-Z0-9_]{3,})(?:=[^`]*)?`", section):
        assert name in env_names, f"`{name}` is neither in .env.example nor in a service's environment"
    for path in re.findall(r"`((?:\./|dags/|tests/|scripts/|airflow_bt/)[^`\s]*)`", section):
        assert (REPO / path).exists(), path
    for name in re.findall(r"`([\w.-]+\.(?:yaml|example)|Dockerfile|pyproject\.toml)`", section):
        assert (REPO / name).exists(), name
    _check_cli_words(in_services, tmp_path / "airflow-home")


def _check_cli_words(commands: list[list[str]], home: Path) -> None:
    """``airflow``/``airflow-bt`` commands the README runs in a service exist, with the options it gives."""
    from airflow_env import BIN, airflow_env

    from airflow_bt.compat import AIRFLOW_V3

    dag_ids = {re.search(r"^dag_id:\s*(\S+)", p.read_text(), re.M).group(1)  # type: ignore[union-attr]
               for p in (REPO / "dags" / "configs").glob("*.y*ml")}
    helps: dict[tuple[str, ...], str] = {}
    for argv in commands:
        assert argv[0] in ("airflow", "airflow-bt"), argv
        if argv[0] == "airflow" and not AIRFLOW_V3:
            continue  # the stack's image runs Airflow 3: its CLI is not this one
        depth = 3 if argv[0] == "airflow" else 2
        key = tuple(argv[:depth])
        if key not in helps:
            proc = subprocess.run([str(BIN / key[0]), *key[1:], "--help"], capture_output=True, text=True,
                                  env=airflow_env(home), timeout=120, check=False)
            assert proc.returncode == 0, f"{' '.join(key)} --help:\n{proc.stderr[-2000:]}"
            helps[key] = proc.stdout
        for word in argv[depth:]:
            if word.startswith("--"):
                assert word.split("=")[0] in helps[key], f"{' '.join(key)} has no option {word}"
        for word in argv:
            if word.endswith("_scoring"):
                assert word in dag_ids, word
