"""Demo data generator, demo model packaging, and the SageMaker handler in the tarball."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import re
import sys
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
import pytest

from airflow_bt.demo.__main__ import main as demo_main
from airflow_bt.demo.data import (
    COLUMNS,
    PLANS,
    REGIONS,
    generate_partition,
    generate_range,
    generate_training_set,
    parquet_folder,
    split_rows,
)
from airflow_bt.demo.model import HANDLER_SOURCE, train_model

HEADER = ",".join(COLUMNS)


def _read_rows(path: str) -> list[str]:
    return Path(path).read_text(encoding="ascii").splitlines()


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------


def test_partition_files_header_and_row_counts(tmp_path: Path) -> None:
    paths = generate_partition(str(tmp_path / "p"), "2026-06-24", rows=1003, files=4, seed=0)
    assert [Path(p).name for p in paths] == [f"customers-000{k}.csv" for k in range(1, 5)]
    counts = []
    for path in paths:
        lines = _read_rows(path)
        assert lines[0] == HEADER
        counts.append(len(lines) - 1)
    assert counts == [251, 251, 251, 250] == split_rows(1003, 4)


def test_partition_is_deterministic_and_depends_on_ds_and_seed(tmp_path: Path) -> None:
    def contents(name: str, ds: str, seed: int) -> list[bytes]:
        return [Path(p).read_bytes() for p in generate_partition(str(tmp_path / name), ds, 2000, 3, seed)]

    first = contents("a", "2026-06-24", 0)
    assert contents("b", "2026-06-24", 0) == first
    assert contents("c", "2026-06-25", 0) != first
    assert contents("d", "2026-06-24", 1) != first


def test_partition_values_are_plausible_and_ids_unique(tmp_path: Path) -> None:
    paths = generate_partition(str(tmp_path), "2026-06-24", rows=20_000, files=4, seed=3)
    frame = pd.concat([pd.read_csv(p, dtype={"customer_id": str}) for p in paths], ignore_index=True)
    assert list(frame.columns) == list(COLUMNS)
    assert len(frame) == 20_000
    assert frame["customer_id"].is_unique
    assert frame["customer_id"].str.fullmatch(r"C\d{8}").all()
    signup = pd.to_datetime(frame["signup_date"], format="%Y-%m-%d")
    assert (signup <= pd.Timestamp("2026-06-24")).all()
    assert set(frame["plan"]) == set(PLANS)
    assert set(frame["region"]) == set(REGIONS)
    assert frame["tenure_months"].between(0, 72).all()
    assert (frame["monthly_charges"] > 0).all()
    assert (frame["total_charges"] >= 0).all()
    assert set(frame["autopay"]) == {0, 1}
    assert frame["age"].between(18, 90).all()
    assert frame["num_products"].between(1, 5).all()
    # Two decimals exactly, as written.
    text = Path(paths[0]).read_text().splitlines()[1]
    assert re.fullmatch(
        r"C\d{8},\d{4}-\d{2}-\d{2},[a-z]+,[a-z-]+,\d+,\d+\.\d{2},\d+\.\d{2},\d+,\d+,\d,[01],\d+", text
    )


def test_generate_range_layout(tmp_path: Path) -> None:
    partitions = generate_range(
        str(tmp_path), "churn", start="2026-06-22", end="2026-06-24", rows=40, files=2
    )
    assert partitions == [str(tmp_path / "input" / "churn" / f"dt=2026-06-2{d}") for d in (2, 3, 4)]
    for folder in partitions:
        assert sorted(p.name for p in Path(folder).iterdir()) == ["customers-0001.csv", "customers-0002.csv"]
    with pytest.raises(ValueError, match="before start"):
        generate_range(str(tmp_path), start="2026-06-24", end="2026-06-22")


def test_fewer_files_removes_stale_files(tmp_path: Path) -> None:
    generate_partition(str(tmp_path), "2026-06-24", rows=100, files=4)
    generate_partition(str(tmp_path), "2026-06-24", rows=100, files=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["customers-0001.csv", "customers-0002.csv"]


def test_training_set_has_signal() -> None:
    features, labels = generate_training_set(5000, seed=1)
    assert list(features.columns) == list(COLUMNS)
    assert labels.shape == (5000,)
    assert set(np.unique(labels)) == {0, 1}
    assert 0.1 < labels.mean() < 0.5
    # Churn is higher for short tenure and for many support calls.
    assert labels[features["tenure_months"] < 6].mean() > labels[features["tenure_months"] > 24].mean()
    assert labels[features["support_calls"] >= 3].mean() > labels[features["support_calls"] == 0].mean()


# ---------------------------------------------------------------------------------------------
# model + handler
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tarball(tmp_path_factory: pytest.TempPathFactory) -> str:
    return train_model(str(tmp_path_factory.mktemp("model")), rows=4000, seed=7)


@pytest.fixture(scope="module")
def handler(tarball: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ModuleType, Any]]:
    """The handler imported from an extracted tarball the way a runtime would, plus its model."""
    model_dir = tmp_path_factory.mktemp("unpacked")
    with tarfile.open(tarball) as tar:
        tar.extractall(model_dir, filter="data")
    code_dir = str(model_dir / "code")
    name = f"demo_inference_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(name, model_dir / "code" / "inference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, code_dir)
    try:
        spec.loader.exec_module(module)
        yield module, module.model_fn(str(model_dir))
    finally:
        sys.path.remove(code_dir)


@pytest.fixture(scope="module")
def csv_rows(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    folder = str(tmp_path_factory.mktemp("rows"))
    (path,) = generate_partition(folder, "2026-06-24", rows=100, files=1, seed=5)
    return _read_rows(path)[1:]


def test_tarball_members_and_metrics(tarball: str) -> None:
    with tarfile.open(tarball) as tar:
        assert tar.getnames() == ["code/inference.py", "features.json", "model.joblib"]
        features = json.load(tar.extractfile("features.json"))  # type: ignore[arg-type]
        handler_source = tar.extractfile("code/inference.py").read()  # type: ignore[union-attr]
    assert features == list(COLUMNS)
    assert handler_source == HANDLER_SOURCE.read_bytes()
    metrics = json.loads((Path(tarball).parent / "metrics.json").read_text())
    assert metrics["train_rows"] == 4000
    assert 0.6 < metrics["holdout_auc"] <= 1.0


def test_tarball_is_reproducible(tarball: str, tmp_path: Path) -> None:
    again = train_model(str(tmp_path), rows=4000, seed=7)
    assert Path(again).read_bytes() == Path(tarball).read_bytes()


def test_handler_is_self_contained() -> None:
    source = HANDLER_SOURCE.read_text()
    assert not re.search(r"^\s*(from|import)\s+airflow_bt", source, flags=re.MULTILINE)


def test_handler_csv_round_trip(handler: tuple[ModuleType, Any], csv_rows: list[str]) -> None:
    module, model = handler
    body = ("\n".join(csv_rows) + "\n").encode()
    data = module.input_fn(body, "text/csv")
    assert len(data) == 100
    assert data["customer_id"].tolist() == [row.split(",")[0] for row in csv_rows]
    out = module.output_fn(module.predict_fn(data, model), "text/csv")
    assert isinstance(out, str) and out.endswith("\n")
    lines = out.splitlines()
    assert len(lines) == 100
    assert all(re.fullmatch(r"[01]\.\d{6}", line) for line in lines)
    values = [float(line) for line in lines]
    assert all(0.0 <= v <= 1.0 for v in values)
    assert len(set(values)) > 10


def test_handler_jsonlines_matches_csv(handler: tuple[ModuleType, Any], csv_rows: list[str]) -> None:
    module, model = handler
    records = list(csv.DictReader(io.StringIO("\n".join([",".join(COLUMNS), *csv_rows]))))
    numeric = set(COLUMNS) - {"customer_id", "signup_date", "plan", "region"}
    lines = [json.dumps({k: (float(v) if k in numeric else v) for k, v in r.items()}) for r in records]
    data = module.input_fn("\n".join(lines), "application/jsonlines")
    out = module.output_fn(module.predict_fn(data, model), "application/jsonlines")
    parsed = [json.loads(line) for line in out.splitlines()]
    assert len(parsed) == 100 and out.endswith("\n")
    from_csv = module.predict_fn(module.input_fn("\n".join(csv_rows), "text/csv; charset=utf-8"), model)
    assert np.allclose([p["churn_probability"] for p in parsed], from_csv, atol=1e-6)
    assert np.allclose(json.loads(module.output_fn(from_csv, "application/json")), from_csv, atol=1e-6)


def test_handler_rejects_malformed_input(handler: tuple[ModuleType, Any], csv_rows: list[str]) -> None:
    module, _ = handler
    fields = csv_rows[1].split(",")
    fields[COLUMNS.index("tenure_months")] = "twelve"
    bad = "\n".join([csv_rows[0], ",".join(fields)]) + "\n"
    with pytest.raises(ValueError, match=r"row 2: column 'tenure_months' must be numeric"):
        module.input_fn(bad, "text/csv")
    with pytest.raises(ValueError, match="header"):
        module.input_fn("\n".join([HEADER, *csv_rows[:3]]), "text/csv")
    with pytest.raises(ValueError, match="expected 12 columns"):
        module.input_fn(csv_rows[0] + ",extra\n", "text/csv")
    with pytest.raises(ValueError, match="missing value for column 'age'"):
        module.input_fn(csv_rows[0].rsplit(",", 1)[0] + ",\n", "text/csv")
    with pytest.raises(ValueError, match="line 1: missing key"):
        module.input_fn(json.dumps({"customer_id": "C1"}), "application/jsonlines")
    with pytest.raises(ValueError, match="unsupported content type"):
        module.input_fn(b"{}", "application/x-parquet")
    with pytest.raises(ValueError, match="unsupported accept"):
        module.output_fn(np.array([0.5]), "application/x-parquet")


def test_handler_scores_the_columns_it_is_sent(
    handler: tuple[ModuleType, Any], csv_rows: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """CHURN_INPUT_COLUMNS: records without customer_id, in that order, score as the full rows do."""
    module, model = handler
    full = module.predict_fn(module.input_fn("\n".join(csv_rows), "text/csv"), model)
    order = [c for c in COLUMNS if c != "customer_id"][::-1]
    projected = [
        ",".join(dict(zip(COLUMNS, row.split(","), strict=True))[c] for c in order) for row in csv_rows
    ]
    monkeypatch.setenv("CHURN_INPUT_COLUMNS", ",".join(order))
    assert np.allclose(module.predict_fn(module.input_fn("\n".join(projected), "text/csv"), model), full)
    with pytest.raises(ValueError, match="expected 11 columns"):
        module.input_fn(csv_rows[0], "text/csv")
    monkeypatch.setenv("CHURN_INPUT_COLUMNS", "age,height")
    with pytest.raises(ValueError, match=r"CHURN_INPUT_COLUMNS names \['height'\]"):
        module.input_fn("44,1.8", "text/csv")


def test_parquet_copy_holds_the_csv_rows_typed(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    (folder,) = generate_range(str(tmp_path), start="2026-06-24", rows=5003, files=2, parquet=True)
    copies = sorted(Path(parquet_folder(folder)).glob("*.parquet"))
    assert [p.name for p in copies] == ["customers-0001.parquet", "customers-0002.parquet"]
    assert Path(parquet_folder(folder)) == tmp_path / "input" / "churn_parquet" / "dt=2026-06-24"
    for csv_file, copy in zip(sorted(Path(folder).glob("*.csv")), copies, strict=True):
        table = pq.read_table(copy)
        assert table.schema.field("signup_date").type == pa.date32()
        assert table.schema.field("monthly_charges").type == pa.float64()
        frame = pd.read_csv(csv_file, dtype={"customer_id": str, "signup_date": str})
        assert table.num_rows == len(frame)
        assert table.column("customer_id").to_pylist() == frame["customer_id"].tolist()
        assert [d.isoformat() for d in table.column("signup_date").to_pylist()] == frame["signup_date"].tolist()
        assert table.column("total_charges").to_pylist() == frame["total_charges"].tolist()


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


def test_cli_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = demo_main(
        ["data", "--root", str(tmp_path), "--start", "2026-06-24", "--rows", "10", "--files", "2"]
    )
    assert code == 0
    assert "dt=2026-06-24" in capsys.readouterr().out
    assert (tmp_path / "input" / "churn" / "dt=2026-06-24" / "customers-0002.csv").exists()


def test_cli_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        demo_main(["--help"])
    assert exc.value.code == 0
    assert "data" in capsys.readouterr().out
