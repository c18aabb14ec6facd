"""Where the benchmark keeps its data, and how it makes it (once per row count)."""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
DATA = BENCH / "data"  # gitignored
RESULTS = BENCH / "results"
CONFIG = REPO / "dags" / "configs" / "churn.yaml"
MODEL = "churn"
DS = "2026-06-24"
FILES = 8
SEED = 0
MODEL_TRAIN_ROWS = 50_000
_DONE = ".complete"


@dataclass(frozen=True)
class Dataset:
    """One generated day of ``rows`` customers, and the scratch space of the runs over it."""

    rows: int
    root: Path  # bench/data/rows-<N>: input/churn/dt=<DS>/customers-000k.csv

    @property
    def input_dir(self) -> Path:
        return self.root / "input" / MODEL / f"dt={DS}"

    @property
    def files(self) -> list[Path]:
        return sorted(self.input_dir.glob("customers-*.csv"))

    @property
    def concat_dir(self) -> Path:
        """One file holding the whole day, one header line (for shard vs ``split``)."""
        return self.root / "concat"

    @property
    def concat_file(self) -> Path:
        return self.concat_dir / "all.csv"

    @property
    def bytes(self) -> int:
        return sum(p.stat().st_size for p in self.files)

    @property
    def parquet_dir(self) -> Path:
        """The same day as typed Parquet, one file per CSV file (``csv_to_parquet``): see :func:`parquet_dataset`."""
        return self.root / "parquet"

    @property
    def parquet_files(self) -> list[Path]:
        return sorted(self.parquet_dir.glob("customers-*.parquet"))

    @property
    def parquet_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.parquet_files)


def file_uri(path: Path) -> str:
    """``file://`` + the absolute path, unescaped (``Path.as_uri`` would escape the ``=`` of ``dt=``)."""
    return "file://" + str(path.resolve())


def scratch_dir(name: str) -> Path:
    """An empty folder for one run's outputs (removed by the caller when done)."""
    path = DATA / "runs" / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def _model_key() -> str:
    """Changes whenever the model code, its handler or scikit-learn changes: the cached model is then stale."""
    from importlib.metadata import version

    demo = REPO / "airflow_bt" / "demo"
    digest = hashlib.sha256(version("scikit-learn").encode())
    for source in (demo / "model.py", demo / "data.py", demo / "handler" / "inference.py"):
        digest.update(source.read_bytes())
    return digest.hexdigest()


def model_dir() -> Path:
    """The demo model (``model.tar.gz`` plus its unpacked files), trained once per version of its code."""
    out = DATA / "model"
    key = _model_key()
    done = out / _DONE
    if not done.exists() or done.read_text() != key:
        from airflow_bt.demo.model import train_model

        started = time.perf_counter()
        shutil.rmtree(out, ignore_errors=True)
        train_model(str(out), rows=MODEL_TRAIN_ROWS, seed=7)
        done.write_text(key)
        print(f"trained the demo model in {time.perf_counter() - started:.1f} s -> {out / 'model.tar.gz'}",
              flush=True)
    return out


def dataset(rows: int) -> Dataset:
    """The day's input at ``rows`` rows (8 files), generated on first use and cached under bench/data/."""
    data = Dataset(rows, DATA / f"rows-{rows}")
    if not (data.root / _DONE).exists():
        from airflow_bt.demo.data import generate_range

        started = time.perf_counter()
        shutil.rmtree(data.root, ignore_errors=True)
        generate_range(str(data.root), MODEL, DS, rows=rows, files=FILES, seed=SEED)
        _concatenate(data)
        (data.root / _DONE).write_text("")
        print(f"generated {rows:,} rows in {FILES} files ({data.bytes / 1e6:.0f} MB) in "
              f"{time.perf_counter() - started:.1f} s -> {data.input_dir}", flush=True)
    return data


def _parquet_key() -> str:
    """Changes whenever the converter (airflow_bt/demo/data.py) or pyarrow changes: the cached copy is then stale."""
    from importlib.metadata import version

    digest = hashlib.sha256(version("pyarrow").encode())
    digest.update((REPO / "airflow_bt" / "demo" / "data.py").read_bytes())
    return digest.hexdigest()


def parquet_dataset(rows: int) -> Dataset:
    """:func:`dataset`, plus its typed Parquet copy (``csv_to_parquet`` of each of the 8 CSV files, made once,
    cached in bench/data/rows-N/parquet/)."""
    data = dataset(rows)
    done = data.parquet_dir / _DONE
    key = _parquet_key()
    if not done.exists() or done.read_text() != key:
        from airflow_bt.demo.data import csv_to_parquet

        started = time.perf_counter()
        shutil.rmtree(data.parquet_dir, ignore_errors=True)
        data.parquet_dir.mkdir(parents=True)
        for path in data.files:
            csv_to_parquet(path, data.parquet_dir / (path.stem + ".parquet"))
        if len(data.parquet_files) != len(data.files):
            raise RuntimeError(f"csv_to_parquet made {len(data.parquet_files)} files of {len(data.files)} in "
                               f"{data.parquet_dir}")
        done.write_text(key)
        print(f"converted {rows:,} rows to Parquet ({data.parquet_bytes / 1e6:.0f} MB in {len(data.parquet_files)} "
              f"files) in {time.perf_counter() - started:.1f} s -> {data.parquet_dir}", flush=True)
    return data


def _concatenate(data: Dataset) -> None:
    data.concat_dir.mkdir(parents=True, exist_ok=True)
    with open(data.concat_file, "wb") as out:
        for index, path in enumerate(data.files):
            with open(path, "rb") as src:
                header = src.readline()
                if index == 0:
                    out.write(header)
                shutil.copyfileobj(src, out, 8 * 1024 * 1024)


def pipeline_settings() -> dict[str, Any]:
    """The churn DAG's shard/transform/publish settings, from its config file."""
    from airflow_bt.dag_factory.config import load_config

    config = load_config(CONFIG)
    return {
        "target_shard_mb": float(config["shard"]["target_shard_mb"]),
        "max_shards": int(config["shard"]["max_shards"]),
        "validation": config["shard"]["validation"],
        "format": config["input"]["format"],
        "model_name": config["transform"]["model_name"],
        "image": config["transform"]["image"] or "sagemaker-scikit-learn",
        "instance_count": int(config["transform"]["instance_count"]),
        "batch_strategy": config["transform"]["batch_strategy"],
        "max_payload_mb": config["transform"]["max_payload_mb"],
        "max_concurrent_transforms": config["transform"]["max_concurrent_transforms"],
        "accept": config["transform"]["accept"],
        "model_environment": dict(config["transform"]["model_environment"]),
        "environment": dict(config["transform"]["environment"]),
        "prediction_columns": list(config["postprocess"]["prediction_columns"]),
        "checks": config["postprocess"]["checks"],
    }


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    import platform

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = 0.0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_gib, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]
