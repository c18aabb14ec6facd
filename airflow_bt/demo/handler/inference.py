"""SageMaker scikit-learn framework-container handler for the demo churn model.

Packaged as ``code/inference.py`` inside ``model.tar.gz`` next to ``model.joblib`` and
``features.json``. The runtime imports this file with ``code/`` on ``sys.path``, so it must
stay self-contained: it imports only the standard library, numpy, pandas, joblib and
threadpoolctl (all in the SageMaker scikit-learn image), never ``airflow_bt``.

Contract:

- ``model_fn(model_dir)`` loads the pipeline and the input column names;
- ``input_fn(body, content_type)`` parses ``text/csv`` rows *without* a header (columns in
  ``features.json`` order, or ``CHURN_INPUT_COLUMNS``' order when that names the columns sent)
  or ``application/jsonlines`` objects; malformed input raises ``ValueError`` naming the record
  and column;
- ``predict_fn(data, model)`` returns the churn probability of every record, using
  ``CHURN_PREDICT_THREADS`` OpenMP threads (default 1; 0 = the library default);
- ``output_fn(prediction, accept)`` renders one line per record (``text/csv``: ``%.6f``;
  ``application/jsonlines``: ``{"churn_probability": p}``); ``application/json`` (the
  container's default accept) gives one JSON array per request, which does not split into
  records, so batch jobs should ask for ``text/csv`` or ``application/jsonlines``.
"""

from __future__ import annotations

import io
import json
import os
from typing import Any

import joblib
import numpy as np
import pandas as pd

MODEL_FILE = "model.joblib"
FEATURES_FILE = "features.json"

#: Used only if neither model_fn nor a features.json next to code/ told us the columns.
DEFAULT_FEATURES: list[str] = [
    "customer_id",
    "signup_date",
    "plan",
    "region",
    "tenure_months",
    "monthly_charges",
    "total_charges",
    "support_calls",
    "last_login_days",
    "num_products",
    "autopay",
    "age",
]
STRING_COLUMNS = frozenset({"customer_id", "signup_date", "plan", "region"})

CSV_TYPES = frozenset({"text/csv"})
JSONLINES_TYPES = frozenset({"application/jsonlines", "application/x-jsonlines", "application/jsonl"})
JSON_TYPES = frozenset({"application/json"})
_DEFAULT_ACCEPT = frozenset({"", "*/*"})

_features: list[str] | None = None


def _predict_threads() -> int:
    """OpenMP threads per prediction from ``CHURN_PREDICT_THREADS`` (default 1; 0 = library default).

    One thread per request is the default because Batch Transform parallelism comes from
    concurrent requests and instances, and a multi-threaded OpenMP predict on busy cores is
    many times slower (threads spin-wait for descheduled peers).
    """
    raw = os.environ.get("CHURN_PREDICT_THREADS", "1").strip() or "1"
    try:
        threads = int(raw)
    except ValueError:
        raise ValueError(f"CHURN_PREDICT_THREADS must be an integer, got {raw!r}") from None
    if threads < 0:
        raise ValueError(f"CHURN_PREDICT_THREADS must be >= 0, got {threads}")
    return threads


class ChurnModel:
    """What ``model_fn`` returns: the fitted pipeline and its input columns, in order."""

    def __init__(self, pipeline: Any, features: list[str], threads: int = 1) -> None:
        self.pipeline = pipeline
        self.features = features
        self.threads = threads
        self._controller: Any = None
        if threads > 0:
            try:  # a scikit-learn dependency; created after the model loaded libgomp
                from threadpoolctl import ThreadpoolController

                self._controller = ThreadpoolController()
            except ImportError:  # pragma: no cover - scikit-learn always ships it
                self._controller = None

    def predict_proba(self, data: pd.DataFrame) -> np.ndarray:
        """Class probabilities (column 1 is churn), with at most ``threads`` OpenMP threads."""
        if self._controller is None:
            return np.asarray(self.pipeline.predict_proba(data))
        # omp_set_num_threads is per calling thread, so concurrent requests do not interfere.
        with self._controller.limit(limits=self.threads, user_api="openmp"):
            return np.asarray(self.pipeline.predict_proba(data))


def _read_features(path: str) -> list[str]:
    with open(path, encoding="utf-8") as fh:
        names = json.load(fh)
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names) or not names:
        raise ValueError(f"{path}: expected a non-empty JSON list of column names")
    return names


def _current_features() -> list[str]:
    """Columns set by model_fn, else features.json beside code/, else the built-in list."""
    global _features
    if _features is None:
        beside = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), FEATURES_FILE)
        _features = _read_features(beside) if os.path.exists(beside) else list(DEFAULT_FEATURES)
    return _features


def model_fn(model_dir: str) -> ChurnModel:
    """Load ``model.joblib`` and ``features.json`` from the unpacked model directory."""
    global _features
    features = _read_features(os.path.join(model_dir, FEATURES_FILE))
    pipeline = joblib.load(os.path.join(model_dir, MODEL_FILE))
    _features = features
    return ChurnModel(pipeline, features, _predict_threads())


def _media_type(value: str | None) -> str:
    return (value or "").split(";", 1)[0].strip().lower()


def _to_bytes(body: bytes | bytearray | memoryview | str) -> bytes:
    if isinstance(body, str):
        return body.encode("utf-8")
    return bytes(body)


def _check(
    frame: pd.DataFrame, features: list[str], what: str, numbers: list[int] | None = None
) -> pd.DataFrame:
    """Reject values the model cannot score: non-numeric or non-finite numbers, missing values.

    ``what`` names a record in messages ("row" for CSV, "line" for JSON lines); ``numbers`` maps
    frame positions to those numbers (default: position + 1).
    """

    def where(pos: int) -> str:
        return f"{what} {numbers[pos] if numbers is not None else pos + 1}"

    for col in features:
        if col in STRING_COLUMNS:
            continue
        series = frame[col]
        if not pd.api.types.is_numeric_dtype(series):
            as_object = series.astype(object)
            converted = pd.to_numeric(as_object, errors="coerce")
            bad = converted.isna() & series.notna()
            if bad.any():
                pos = int(np.flatnonzero(bad.to_numpy())[0])
                value = as_object.iloc[pos]
                hint = " (is there a header row? send rows only)" if value == col else ""
                raise ValueError(f"{where(pos)}: column {col!r} must be numeric, got {value!r}{hint}")
            frame[col] = series = converted
        if pd.api.types.is_float_dtype(series):
            values = series.to_numpy()
            infinite = np.isinf(values)
            if infinite.any():
                pos = int(np.flatnonzero(infinite)[0])
                raise ValueError(f"{where(pos)}: column {col!r} must be finite, got {float(values[pos])!r}")
    missing = frame[features].isna().to_numpy()
    if missing.any():
        rows, cols = np.nonzero(missing)
        raise ValueError(f"{where(int(rows[0]))}: missing value for column {features[int(cols[0])]!r}")
    return frame


def _empty_frame(features: list[str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object if c in STRING_COLUMNS else float) for c in features})


def _parse_csv(body: bytes, features: list[str]) -> pd.DataFrame:
    # No ``names``: pandas then takes the column count from the first row and raises on any
    # longer row, so every row with a wrong number of fields is caught (short rows show up as
    # missing values).
    dtypes = {i: str for i, c in enumerate(features) if c in STRING_COLUMNS}
    try:
        frame = pd.read_csv(
            io.BytesIO(body),
            header=None,
            dtype=dtypes,  # type: ignore[arg-type]
            keep_default_na=False,
            na_values=[""],
        )
    except pd.errors.EmptyDataError:
        return _empty_frame(features)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ValueError(f"malformed CSV, expected {len(features)} columns {features}: {exc}") from exc
    if frame.shape[1] != len(features):
        raise ValueError(
            f"row 1: expected {len(features)} columns {features}, got {frame.shape[1]}"
            " (send rows without a header, in features.json order)"
        )
    frame.columns = pd.Index(features)
    return _check(frame, features, "row")


def _parse_jsonlines(body: bytes, features: list[str]) -> pd.DataFrame:
    records = []
    numbers = []
    for number, line in enumerate(body.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise ValueError(f"line {number}: not valid JSON: {exc}") from exc
        if not isinstance(record, dict):
            raise ValueError(f"line {number}: expected a JSON object, got {type(record).__name__}")
        absent = [c for c in features if c not in record]
        if absent:
            raise ValueError(f"line {number}: missing key(s) {absent}")
        records.append([record[c] for c in features])
        numbers.append(number)
    if not records:
        return _empty_frame(features)
    frame = pd.DataFrame.from_records(records, columns=features)
    for col in STRING_COLUMNS.intersection(features):
        frame[col] = frame[col].astype(object).where(frame[col].isna(), frame[col].astype(str))
    return _check(frame, features, "line", numbers)


def _sent_columns(features: list[str]) -> list[str]:
    """The columns each record carries, in order: ``CHURN_INPUT_COLUMNS`` (comma-separated, a subset of
    the model's columns, e.g. without ``customer_id`` when the scoring job projects it away), else all."""
    raw = os.environ.get("CHURN_INPUT_COLUMNS", "").strip()
    if not raw:
        return features
    names = [name.strip() for name in raw.split(",") if name.strip()]
    unknown = [name for name in names if name not in features]
    if unknown:
        raise ValueError(f"CHURN_INPUT_COLUMNS names {unknown}, which are not the model's columns {features}")
    return names


def _complete(frame: pd.DataFrame, features: list[str]) -> pd.DataFrame:
    """Add the model's columns the records did not carry (empty strings, or NaN for numbers, which the
    model rejects if it reads them) and put every column in the model's order."""
    for name in features:
        if name not in frame.columns:
            frame[name] = "" if name in STRING_COLUMNS else np.nan
    return frame[features]


def input_fn(request_body: bytes | str, content_type: str) -> pd.DataFrame:
    """Parse a request into a DataFrame with the model's input columns.

    ``text/csv``: rows without a header, columns in ``features.json`` order. ``application/
    jsonlines``: one JSON object per line with those keys (extra keys are ignored). Raises
    ``ValueError`` for other content types and for records the model cannot score.
    """
    features = _current_features()
    sent = _sent_columns(features)
    media = _media_type(content_type)
    body = _to_bytes(request_body)
    if media in CSV_TYPES:
        return _complete(_parse_csv(body, sent), features)
    if media in JSONLINES_TYPES:
        return _complete(_parse_jsonlines(body, sent), features)
    raise ValueError(
        f"unsupported content type {content_type!r}: send text/csv (no header) or application/jsonlines"
    )


def predict_fn(data: pd.DataFrame, model: Any) -> np.ndarray:
    """Churn probability of every record (``predict_proba[:, 1]``)."""
    if len(data) == 0:
        return np.empty(0, dtype=np.float64)
    return np.asarray(model.predict_proba(data))[:, 1]


def output_fn(prediction: Any, accept: str | None) -> str:
    """One line per record: ``%.6f`` for ``text/csv``, ``{"churn_probability": p}`` for JSON lines.

    ``application/json`` returns one JSON array of the probabilities; no accept (or ``*/*``)
    means ``text/csv``.
    """
    media = _media_type(accept)
    values = np.asarray(prediction, dtype=np.float64).ravel().tolist()
    if media in JSON_TYPES:  # the framework container's default accept: one JSON array per request
        return "[" + ", ".join(map("%.6f".__mod__, values)) + "]"
    if media in CSV_TYPES or media in _DEFAULT_ACCEPT:
        return "\n".join(map("%.6f".__mod__, values)) + "\n" if values else ""
    if media in JSONLINES_TYPES:
        return "\n".join(map('{"churn_probability": %.6f}'.__mod__, values)) + "\n" if values else ""
    raise ValueError(
        f"unsupported accept type {accept!r}: use text/csv, application/jsonlines or application/json"
    )
