"""docker-compose.yaml as the tests read it: YAML anchors resolved, ``${VAR}`` interpolated.

Interpolation follows Compose: ``$$`` is a literal ``$``; ``${VAR}`` and ``$VAR`` take the
value (empty when unset); ``${VAR:-default}`` / ``${VAR-default}`` fall back when unset or
empty / unset; ``${VAR:?message}`` / ``${VAR?message}`` are required. Values come from an env
file (``.env.example``), as ``docker compose --env-file .env.example`` would take them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airflow_env import REPO

COMPOSE_FILE = REPO / "docker-compose.yaml"
ENV_EXAMPLE = REPO / ".env.example"

_VAR = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
                  r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))")


@dataclass(frozen=True)
class Reference:
    """One ``${VAR...}`` in the file: its name, whether it has a default, and whether it is required."""

    name: str
    has_default: bool
    required: bool


def read_env_file(path: Path = ENV_EXAMPLE) -> dict[str, str]:
    """``KEY=value`` lines of an env file (comments and blank lines skipped, optional quotes removed)."""
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[key.strip()] = value
    return env


def references(text: str) -> list[Reference]:
    """Every variable reference in a compose file's text."""
    found = []
    for m in _VAR.finditer(text):
        if m.group("escaped"):
            continue
        name = m.group("braced") or m.group("bare")
        op = m.group("op") or ""
        found.append(Reference(name, has_default=op.endswith("-"), required=op.endswith("?")))
    return found


def interpolate(value: str, env: dict[str, str]) -> str:
    def sub(m: re.Match[str]) -> str:
        if m.group("escaped"):
            return "$"
        name = m.group("braced") or m.group("bare")
        op, arg = m.group("op") or "", m.group("arg") or ""
        current = env.get(name)
        if op in (":-", "-"):
            missing = current is None or (op == ":-" and current == "")
            return arg if missing else str(current)
        if op in (":?", "?"):
            if current is None or (op == ":?" and current == ""):
                raise KeyError(f"{name} is required: {arg}")
            return current
        return current or ""

    return _VAR.sub(sub, value)


def _walk(node: Any, env: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {k: _walk(v, env) for k, v in node.items()}
    if isinstance(node, list):
        return [_walk(v, env) for v in node]
    if isinstance(node, str):
        return interpolate(node, env)
    return node


def load(env: dict[str, str] | None = None, path: Path = COMPOSE_FILE) -> dict[str, Any]:
    """The compose file with anchors and merge keys resolved and every string interpolated."""
    import yaml

    return dict(_walk(yaml.safe_load(path.read_text()), read_env_file() if env is None else env))


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's ``environment`` (mapping or ``KEY=value`` list form) as strings."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def command(service: dict[str, Any]) -> list[str]:
    """``entrypoint`` + ``command`` as an argv list (string forms split like Compose does, on spaces)."""
    argv: list[str] = []
    for key in ("entrypoint", "command"):
        value = service.get(key)
        if isinstance(value, str):
            argv.extend(value.split())
        elif value:
            argv.extend(str(v) for v in value)
    return argv


def bind_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """``(host path, container path)`` of a service's bind mounts (short syntax, relative host paths)."""
    mounts = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            if volume.get("type") == "bind":
                mounts.append((str(volume["source"]), str(volume["target"])))
            continue
        source, target = str(volume).split(":")[:2]
        if source.startswith((".", "/", "~")):
            mounts.append((source, target))
    return mounts


def named_volumes(service: dict[str, Any]) -> list[tuple[str, str]]:
    """``(volume name, container path)`` of a service's named volumes."""
    found = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
            if not source.startswith((".", "/", "~")):
                found.append((source, target))
    return found


def container_ports(service: dict[str, Any]) -> set[int]:
    """Container ports a service publishes (``ports``) or exposes (``expose``)."""
    ports = {int(str(p).split("/")[0]) for p in service.get("expose") or []}
    for port in service.get("ports") or []:
        ports.add(int(str(port.get("target") if isinstance(port, dict) else port).split(":")[-1].split("/")[0]))
    return ports
