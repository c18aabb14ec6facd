"""Helpers that shape test input data."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def corrupt_tenure(path: Path, line: int = 5, value: str = "twelve") -> None:
    """Make one row of a demo CSV unscorable: a non-numeric ``tenure_months``."""
    lines = path.read_text().splitlines(keepends=True)
    fields = lines[line].split(",")
    fields[4] = value
    lines[line] = ",".join(fields)
    path.write_text("".join(lines))


def dag_folder(tmp_path: Path, **sections: dict) -> Path:
    """The repo's DAG file with the churn config, no retries, and ``sections`` merged into its settings."""
    folder = tmp_path / "dags"
    (folder / "configs").mkdir(parents=True)
    shutil.copy(REPO / "dags" / "scoring_dags.py", folder)
    config = yaml.safe_load((REPO / "dags" / "configs" / "churn.yaml").read_text())
    config["retries"] = 0
    for section, values in sections.items():
        config.setdefault(section, {}).update(values)
    (folder / "configs" / "churn.yaml").write_text(yaml.safe_dump(config))
    return folder


def copy_demo(demo_root: Path, tmp_path: Path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(demo_root / "input", data / "input")
    shutil.copytree(demo_root / "models", data / "models")
    return data
