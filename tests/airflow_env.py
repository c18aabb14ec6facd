"""Run Airflow's own CLI against a throw-away Airflow home, as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def airflow_env(home: Path, data_root: Path | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
    )
    if data_root is not None:
        env["AIRFLOW_BT_ROOT"] = data_root.as_uri()
    env.update(extra)
    return env


def airflow(env: dict[str, str], *args: str, timeout: float = 600, check: bool = True
            ) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(BIN / "airflow"), *args], env=env, capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"airflow {' '.join(args)} exited {proc.returncode}\n{proc.stdout[-4000:]}\n"
                             f"{proc.stderr[-4000:]}")
    return proc


def json_from_output(text: str) -> object:
    """The JSON document in a CLI's output (Airflow prints warnings on stdout too)."""
    for line in text.splitlines():
        if line.startswith(("[", "{")):
            return json.loads(line)
    raise AssertionError(f"no JSON in output:\n{text[-2000:]}")
