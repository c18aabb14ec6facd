"""The SageMaker Python SDK v2 in a virtual environment of its own, made with uv and cached across runs.

The SDK's pins need not agree with Airflow's, so it never goes into the test venv: it lives under
``~/.cache/airflow-bt/sdk-<key>/`` (``$AIRFLOW_BT_CACHE`` instead of ``~/.cache/airflow-bt``), keyed by the
requirement and the Python version, and is made once (about a minute; later runs reuse it). A venv is used
only once its install finished (a marker file), so an interrupted install is redone, not half used.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

REQUIREMENT = "sagemaker==2.257.7"  # the SDK v2 the test was measured with
INSTALL_TIMEOUT_S = 900
_READY = ".airflow-bt-ready"


def cache_root() -> Path:
    return Path(os.environ.get("AIRFLOW_BT_CACHE") or Path.home() / ".cache" / "airflow-bt")


def sdk_venv(requirement: str = REQUIREMENT) -> Path:
    key = hashlib.sha256(f"{requirement}|py{sys.version_info.major}.{sys.version_info.minor}".encode()).hexdigest()
    return cache_root() / f"sdk-{key[:12]}"


def _uv() -> list[str] | None:
    found = shutil.which("uv")
    if found:
        return [found]
    probe = subprocess.run([sys.executable, "-m", "uv", "--version"], capture_output=True)
    return [sys.executable, "-m", "uv"] if probe.returncode == 0 else None


def sdk_python(requirement: str = REQUIREMENT) -> tuple[Path | None, str]:
    """The cached venv's python (made now if missing), or ``None`` and why it could not be made."""
    venv = sdk_venv(requirement)
    python = venv / "bin" / "python"
    if (venv / _READY).exists() and python.exists():
        return python, ""
    uv = _uv()
    if uv is None:
        return None, "uv is not installed (pip install uv), so the SageMaker SDK's own venv cannot be made"
    shutil.rmtree(venv, ignore_errors=True)
    steps = [[*uv, "venv", "--quiet", "--python", sys.executable, str(venv)],
             [*uv, "pip", "install", "--quiet", "--python", str(python), requirement]]
    for step in steps:
        try:
            done = subprocess.run(step, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return None, f"{' '.join(step)} took more than {INSTALL_TIMEOUT_S} s"
        if done.returncode != 0:
            return None, f"{' '.join(step)} failed: {(done.stderr or done.stdout).strip()[-500:]}"
    (venv / _READY).write_text(requirement + "\n")
    return python, ""


if __name__ == "__main__":  # `make sdk-env` (a step of `make test`): install it before the tests run
    made, why = sdk_python()
    print(f"SageMaker SDK venv: {made.parent.parent}" if made else f"SageMaker SDK venv not made ({why}): "
          "tests/integration/test_sagemaker_sdk.py will be skipped")
