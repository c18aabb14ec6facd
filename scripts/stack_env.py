"""Write ``.env`` for the docker-compose stack: ``.env.example`` with fresh random secrets.

    python3 scripts/stack_env.py            # or: make stack-env

Every value in ``.env.example`` that starts with ``change-me`` is a placeholder: it is replaced by a
new random secret (a Fernet key for ``AIRFLOW_FERNET_KEY``, 48 hex digits otherwise: safe inside
URLs and JSON, and long enough for MinIO). Everything else is copied as it is. An existing ``.env``
is never overwritten; it is checked instead, and the command fails naming any placeholder still in
it. The stack's init steps (``scripts/stack_init.py``) make the same check and refuse to start.
Standard library only: it runs before anything is installed.
"""

from __future__ import annotations

import argparse
import base64
import os
import secrets
import sys
from collections.abc import Mapping
from pathlib import Path

PLACEHOLDER = "change-me"
REPO = Path(__file__).resolve().parents[1]


def placeholder_names(env: Mapping[str, str]) -> list[str]:
    """The variables whose values still hold the example's placeholder, sorted."""
    return sorted(name for name, value in env.items() if PLACEHOLDER in value)


def new_secret(name: str) -> str:
    if name == "AIRFLOW_FERNET_KEY":
        return base64.urlsafe_b64encode(os.urandom(32)).decode()
    return secrets.token_hex(24)


def render(example: str) -> str:
    """``example``'s text with every placeholder value replaced by a new secret."""
    lines = []
    for line in example.splitlines():
        name, sep, value = line.partition("=")
        if sep and not line.lstrip().startswith("#") and value.strip().startswith(PLACEHOLDER):
            line = f"{name}={new_secret(name.strip())}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def read_env(text: str) -> dict[str, str]:
    env = {}
    for line in text.splitlines():
        name, sep, value = line.strip().partition("=")
        if sep and not name.startswith("#"):
            env[name.strip()] = value.strip().strip("'\"")
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stack_env.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--example", type=Path, default=REPO / ".env.example")
    parser.add_argument("--out", type=Path, default=REPO / ".env")
    args = parser.parse_args(argv)
    if args.out.exists():
        left = placeholder_names(read_env(args.out.read_text()))
        if left:
            print(f"{args.out} exists (left alone) but still holds the example's placeholders: {', '.join(left)}; "
                  f"set them, or move {args.out} away and run this again", file=sys.stderr)
            return 1
        print(f"{args.out} exists and holds no placeholder: left alone")
        return 0
    fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # secrets: readable by you only
    with os.fdopen(fd, "w") as out:
        out.write(render(args.example.read_text()))
    print(f"wrote {args.out} with new random secrets (from {args.example})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
