"""The demo churn model: train, save and package as a SageMaker ``model.tar.gz``.

The artifact holds exactly three members::

    code/inference.py   the framework-container handler (airflow_bt/demo/handler/inference.py)
    features.json       the input column names, in CSV order
    model.joblib        a scikit-learn Pipeline (one-hot plan/region + numeric passthrough
                        -> HistGradientBoostingClassifier)

The pickled pipeline references scikit-learn classes only, so the handler can load it
without ``airflow_bt`` installed. The tarball is deterministic (sorted members, fixed
mtimes/owners, gzip header without name or time): the same seed and library versions give
identical bytes.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import tarfile
import tempfile
import time
from pathlib import Path

import joblib
import numpy as np
import sklearn
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder
from threadpoolctl import threadpool_limits

from airflow_bt.demo.data import (
    CATEGORICAL_COLUMNS,
    COLUMNS,
    NUMERIC_COLUMNS,
    PLANS,
    REGIONS,
    generate_training_set,
)

HANDLER_SOURCE = Path(__file__).resolve().parent / "handler" / "inference.py"
MODEL_FILE = "model.joblib"
FEATURES_FILE = "features.json"
HANDLER_MEMBER = "code/inference.py"
TARBALL = "model.tar.gz"
METRICS_FILE = "metrics.json"
#: mtime of every tar member (2026-01-01T00:00:00Z); the gzip header's mtime is 0.
FIXED_MTIME = 1_767_225_600


def build_pipeline(seed: int = 7) -> Pipeline:
    """The untrained model: one-hot ``plan``/``region``, numeric passthrough, gradient boosting.

    ``customer_id`` and ``signup_date`` are dropped by the column transformer.
    """
    encode = ColumnTransformer(
        [
            (
                "categorical",
                OneHotEncoder(
                    categories=[list(PLANS), list(REGIONS)], handle_unknown="ignore", sparse_output=False
                ),
                list(CATEGORICAL_COLUMNS),
            ),
            ("numeric", "passthrough", list(NUMERIC_COLUMNS)),
        ],
        remainder="drop",
        verbose_feature_names_out=False,
    )
    classifier = HistGradientBoostingClassifier(max_iter=100, early_stopping=False, random_state=seed)
    return Pipeline([("encode", encode), ("classify", classifier)])


def _write_tarball(path: Path, members: dict[str, Path]) -> None:
    """Write a reproducible ``.tar.gz`` of ``{arcname: file}`` atomically."""
    fd, tmp_name = tempfile.mkstemp(prefix=".model-", suffix=".tar.gz.tmp", dir=path.parent)
    try:
        with (
            os.fdopen(fd, "wb") as raw,
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz,
            tarfile.open(fileobj=gz, mode="w", format=tarfile.USTAR_FORMAT) as tar,
        ):
            for arcname in sorted(members):
                data = members[arcname].read_bytes()
                info = tarfile.TarInfo(arcname)
                info.size = len(data)
                info.mtime = FIXED_MTIME
                info.mode = 0o644
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                tar.addfile(info, io.BytesIO(data))
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def train_model(out_dir: str, rows: int = 50_000, seed: int = 7, threads: int | None = 1) -> str:
    """Train the demo churn model and package it; return the path of ``out_dir/model.tar.gz``.

    Also leaves the unpacked artifact in ``out_dir`` (``model.joblib``, ``features.json``,
    ``code/inference.py``, so ``out_dir`` itself is a valid model directory) and writes
    ``out_dir/metrics.json`` (training rows, held-out AUC, timings). ``threads`` caps the
    OpenMP threads used for training (``None``: the library default, all cores).
    """
    if rows < 100:
        raise ValueError(f"need at least 100 training rows, got {rows}")
    out = Path(out_dir)
    (out / "code").mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    features, labels = generate_training_set(rows, seed)
    generated = time.perf_counter()
    pipeline = build_pipeline(seed)
    # One OpenMP thread: on a shared 2-core machine multi-threaded boosting is up to 10x
    # slower whenever another process is busy, and 50k rows train in well under a second.
    with threadpool_limits(limits=threads, user_api="openmp"):
        pipeline.fit(features, labels)
        trained = time.perf_counter()
        holdout_rows = max(10_000, rows // 5)
        holdout, holdout_labels = generate_training_set(holdout_rows, seed + 1)
        scores = pipeline.predict_proba(holdout)[:, 1]
    auc = float(roc_auc_score(holdout_labels, scores))

    joblib.dump(pipeline, out / MODEL_FILE)
    (out / FEATURES_FILE).write_text(json.dumps(list(COLUMNS)) + "\n", encoding="utf-8")
    shutil.copyfile(HANDLER_SOURCE, out / HANDLER_MEMBER)
    tarball = out / TARBALL
    _write_tarball(
        tarball,
        {
            MODEL_FILE: out / MODEL_FILE,
            FEATURES_FILE: out / FEATURES_FILE,
            HANDLER_MEMBER: out / HANDLER_MEMBER,
        },
    )

    metrics = {
        "model": "churn",
        "estimator": "HistGradientBoostingClassifier(max_iter=100)",
        "seed": seed,
        "train_rows": rows,
        "train_churn_rate": round(float(np.mean(labels)), 4),
        "holdout_rows": holdout_rows,
        "holdout_auc": round(auc, 4),
        "generate_seconds": round(generated - started, 3),
        "train_seconds": round(trained - generated, 3),
        "total_seconds": round(time.perf_counter() - started, 3),
        "features": list(COLUMNS),
        "sklearn_version": sklearn.__version__,
        "tarball": str(tarball),
    }
    (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    return str(tarball)
