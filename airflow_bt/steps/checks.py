"""Prediction statistics and checks: computed while publish streams the predictions, judged before ``_SUCCESS``.

Every publication records, per prediction column, ``count``, ``nulls`` (empty, ``NaN``, ``null``), ``min``,
``max``, ``mean`` and, for a column with a ``range``, a histogram over fixed bins (``bins`` equal bins over the
range, plus one below and one above) with quantiles read off it. ``postprocess.checks`` turns them into
checks: ``min_rows``/``max_rows`` for the day; per column ``max_null_fraction``, ``range``, ``allowed_values``,
and drift against the last published day (``max_mean_shift``: the absolute change of the mean;
``max_psi``: the population-stability index of the two histograms). A failed check names the column, the
statistic, the threshold and the setting; with ``on_check_failure: fail`` (the default) nothing is published.

The settings are checked without pyarrow (:func:`checks_error`, at DAG parse time); the statistics use
pyarrow compute kernels on blocks of prediction lines, so they cost one vectorised parse per block.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

#: The statistics a check reads; ``allowed_values`` keeps at most this many distinct values per column.
MAX_DISTINCT = 1000
DEFAULT_BINS = 10
#: Prediction lines gathered before the statistics of a batch are computed.
BATCH_LINES = 256 * 1024
_COLUMN_KEYS = {"max_null_fraction", "range", "allowed_values", "bins", "max_mean_shift", "max_psi"}
_KEYS = {"on_check_failure", "min_rows", "max_rows", "drift_lookback_days", "columns"}
_NULLS = ["", "nan", "NaN", "NAN", "null", "NULL", "None"]


class PredictionCheckError(Exception):
    """One or more checks failed with ``on_check_failure: fail``: the attempt has no ``_SUCCESS``."""


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def checks_error(checks: Any, prediction_columns: list[str]) -> str | None:
    """Why ``postprocess.checks`` is wrong, or None (pure: runs where the DAG is parsed)."""
    if not isinstance(checks, dict):
        return f"expected a mapping, got {type(checks).__name__}"
    unknown = sorted(set(checks) - _KEYS)
    if unknown:
        return f"unknown setting(s) {unknown}; known: {sorted(_KEYS)}"
    if checks.get("on_check_failure", "fail") not in ("fail", "warn"):
        return "on_check_failure must be fail or warn"
    for key in ("min_rows", "max_rows", "drift_lookback_days"):
        if key in checks and (not isinstance(checks[key], int) or isinstance(checks[key], bool) or checks[key] < 0):
            return f"{key} must be a whole number >= 0"
    columns = checks.get("columns") or {}
    if not isinstance(columns, dict):
        return "columns must map prediction column names to their checks"
    for name, spec in columns.items():
        error = _column_error(str(name), spec, prediction_columns)
        if error:
            return error
    return None


def _column_error(name: str, spec: Any, prediction_columns: list[str]) -> str | None:
    where = f"columns.{name}"
    if name not in prediction_columns:
        return f"{where}: {name!r} is not one of prediction_columns {prediction_columns}"
    if not isinstance(spec, dict):
        return f"{where}: expected a mapping of checks"
    unknown = sorted(set(spec) - _COLUMN_KEYS)
    if unknown:
        return f"{where}: unknown check(s) {unknown}; known: {sorted(_COLUMN_KEYS)}"
    bounds = spec.get("range")
    if bounds is not None and not (isinstance(bounds, list) and len(bounds) == 2 and all(map(_number, bounds))
                                   and bounds[0] < bounds[1]):
        return f"{where}.range: expected [min, max] with min < max, got {bounds!r}"
    for key in ("max_null_fraction", "max_mean_shift", "max_psi"):
        if key in spec and (not _number(spec[key]) or spec[key] < 0):
            return f"{where}.{key}: expected a number >= 0, got {spec[key]!r}"
    if "max_null_fraction" in spec and spec["max_null_fraction"] > 1:
        return f"{where}.max_null_fraction: a fraction is at most 1"
    if "bins" in spec and (not isinstance(spec["bins"], int) or not 2 <= spec["bins"] <= 1000):
        return f"{where}.bins: expected a whole number 2-1000"
    if "max_psi" in spec and bounds is None:
        return f"{where}.max_psi needs a range: the histogram's fixed bins are cut from it"
    if "allowed_values" in spec and not (isinstance(spec["allowed_values"], list) and spec["allowed_values"]):
        return f"{where}.allowed_values: expected a non-empty list"
    return None


def bin_edges(spec: dict[str, Any]) -> list[float] | None:
    """The fixed histogram edges of a column: ``bins`` equal bins over its ``range`` (None without a range)."""
    bounds = spec.get("range")
    if not bounds:
        return None
    low, high = float(bounds[0]), float(bounds[1])
    count = int(spec.get("bins", DEFAULT_BINS))
    return [low + (high - low) * k / count for k in range(count + 1)]


@dataclass
class ColumnStats:
    """The running statistics of one prediction column."""

    name: str
    edges: list[float] | None = None
    track_values: bool = False  # for allowed_values: the distinct values seen (up to MAX_DISTINCT + 1)
    count: int = 0
    nulls: int = 0
    numbers: int = 0
    total: float = 0.0
    low: float | None = None
    high: float | None = None
    histogram: list[int] = field(default_factory=list)
    values: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.edges is not None and not self.histogram:
            self.histogram = [0] * (len(self.edges) + 1)  # below, the bins, above

    def add(self, array: Any) -> None:
        """One block's values (a pyarrow array of any type)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        self.count += len(array)
        self.nulls += array.null_count
        if pa.types.is_floating(array.type):
            nan = pc.is_nan(array)  # null where the value is null
            nans = pc.sum(nan).as_py() or 0
            if nans:
                self.nulls += nans
                array = array.filter(pc.invert(nan))  # also drops the nulls
        if pa.types.is_integer(array.type) or pa.types.is_floating(array.type) or pa.types.is_decimal(array.type):
            numbers = array.cast(pa.float64()).drop_null()
            if len(numbers):
                low, high = pc.min_max(numbers).values()
                self.low = low.as_py() if self.low is None else min(self.low, low.as_py())
                self.high = high.as_py() if self.high is None else max(self.high, high.as_py())
                self.total += pc.sum(numbers).as_py()
                self.numbers += len(numbers)
                if self.edges is not None:
                    self._bin(numbers)
        if self.track_values and len(self.values) <= MAX_DISTINCT:
            counts = pc.value_counts(array.drop_null())
            for item in counts.to_pylist()[: MAX_DISTINCT + 1]:
                key = _value_key(item["values"])
                self.values[key] = self.values.get(key, 0) + item["counts"]

    def _bin(self, numbers: Any) -> None:
        """Count the values per bin: 0 below the range, 1..n its equal bins (a value on an inner edge goes to
        the bin above it, the range's top to the last bin), n + 1 above it."""
        import numpy as np

        assert self.edges is not None
        low, high, bins = self.edges[0], self.edges[-1], len(self.edges) - 1
        values = numbers.to_numpy()
        index = np.floor((values - low) * (bins / (high - low))).astype(np.int64) + 1
        index[values == high] = bins
        np.clip(index, 0, bins + 1, out=index)
        counts = np.bincount(index, minlength=bins + 2)
        self.histogram = [a + int(b) for a, b in zip(self.histogram, counts, strict=True)]

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"count": self.count, "nulls": self.nulls,
                               "null_fraction": round(self.nulls / self.count, 6) if self.count else 0.0}
        if self.numbers:
            out.update(min=self.low, max=self.high, mean=self.total / self.numbers)
        if self.edges is not None:
            out["histogram"] = {"edges": self.edges, "counts": self.histogram}
            out["quantiles"] = _quantiles(self.edges, self.histogram)
        if self.track_values:
            out["values"] = dict(sorted(self.values.items()))
            out["values_truncated"] = len(self.values) > MAX_DISTINCT
        return out


def _value_key(value: Any) -> str:
    """A value as allowed_values are compared: integral floats as integers (``1.0`` is ``1``)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _quantiles(edges: list[float], counts: list[int]) -> dict[str, float]:
    """p01..p99 interpolated inside the bins (values below or above the range sit at its edges)."""
    total = sum(counts)
    if not total:
        return {}
    found: dict[str, float] = {}
    for q in (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99):
        target, seen = q * total, 0
        for index, count in enumerate(counts):
            if seen + count >= target and count:
                if index == 0 or index == len(counts) - 1:
                    value = edges[0] if index == 0 else edges[-1]
                else:
                    low, high = edges[index - 1], edges[index]
                    value = low + (high - low) * (target - seen) / count
                found[f"p{round(q * 100):02d}"] = round(value, 6)
                break
            seen += count
    return found


class PredictionStats:
    """The statistics of every prediction column, fed with blocks of prediction lines."""

    def __init__(self, columns: list[str], checks: dict[str, Any] | None = None) -> None:
        specs = (checks or {}).get("columns") or {}
        self.columns = list(columns)
        self.stats = {name: ColumnStats(name, bin_edges(specs.get(name) or {}),
                                        "allowed_values" in (specs.get(name) or {})) for name in columns}
        self._pending: list[bytes] = []
        self._pending_format = "csv"

    def add_lines(self, lines: list[bytes], fmt: str) -> None:
        """Prediction lines as the model wrote them: ``csv`` values, or ``jsonl`` objects. They are gathered
        to :data:`BATCH_LINES` first: the statistics' kernels cost per call, not per value."""
        if self._pending and self._pending_format != fmt:
            self._flush()
        self._pending.extend(lines)
        self._pending_format = fmt
        if len(self._pending) >= BATCH_LINES:
            self._flush()

    def _flush(self) -> None:
        lines, fmt, self._pending = self._pending, self._pending_format, []
        if not lines:
            return
        import pyarrow as pa

        if fmt == "csv" and len(self.columns) == 1:
            numbers = _numbers(lines)
            if numbers is not None:  # the common case, one number per line: no CSV parse
                self.stats[self.columns[0]].add(numbers)
                return
        if fmt == "csv":
            import pyarrow.csv as pacsv

            table = pacsv.read_csv(pa.py_buffer(b"\n".join(lines) + b"\n"),
                                   read_options=pacsv.ReadOptions(column_names=self.columns, block_size=1 << 26),
                                   convert_options=pacsv.ConvertOptions(null_values=_NULLS,
                                                                        strings_can_be_null=True))
            arrays = [table.column(name) for name in self.columns]
        else:
            from airflow_bt.steps.predictions import json_prediction_values

            arrays = [_array(values) for values in json_prediction_values(lines, self.columns)]
        for name, array in zip(self.columns, arrays, strict=True):
            self.stats[name].add(array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array)

    def add_arrays(self, arrays: list[Any]) -> None:
        """One batch of the prediction columns, already typed (the typed publish path parsed them)."""
        for name, array in zip(self.columns, arrays, strict=True):
            self.stats[name].add(array)

    def describe(self, rows: int) -> dict[str, Any]:
        self._flush()
        return {"rows": rows, "columns": {name: s.describe() for name, s in self.stats.items()}}


def _array(values: list[Any]) -> Any:
    """``values`` as an Arrow array; mixed kinds (numbers and text) as text, so nothing is lost or fails."""
    import pyarrow as pa

    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if v is None else str(v) for v in values], pa.string())


def _numbers(lines: list[bytes]) -> Any:
    """One number per line as float64 (``nan`` included), or None when a line is something else."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        return pc.cast(pa.array(lines, pa.binary()), pa.float64())  # parsed in C, no UTF-8 pass
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


@dataclass(frozen=True)
class CheckResult:
    setting: str
    statistic: str
    value: Any
    threshold: Any
    passed: bool
    column: str | None = None

    def message(self) -> str:
        what = f"column {self.column!r} " if self.column else ""
        return (f"{what}{self.statistic} {self.value!r} {'within' if self.passed else 'breaks'} {self.threshold} "
                f"(setting {self.setting})")

    def as_dict(self) -> dict[str, Any]:
        return {"setting": self.setting, "column": self.column, "statistic": self.statistic, "value": self.value,
                "threshold": self.threshold, "passed": self.passed}


def psi(expected: list[int], actual: list[int]) -> float:
    """The population-stability index of two histograms over the same bins (empty bins smoothed to 1e-4)."""
    first, second = sum(expected), sum(actual)
    if not first or not second:
        return 0.0
    total = 0.0
    for e, a in zip(expected, actual, strict=True):
        p, q = max(e / first, 1e-4), max(a / second, 1e-4)
        total += (q - p) * math.log(q / p)
    return total


def evaluate(checks: dict[str, Any], statistics: dict[str, Any], previous: dict[str, Any] | None
             ) -> list[CheckResult]:
    """Every configured check against this publication's ``statistics`` (and ``previous``: the last published
    day's, for drift)."""
    base = "postprocess.checks"
    rows = statistics["rows"]
    results = []
    if "min_rows" in checks:
        results.append(CheckResult(f"{base}.min_rows", "rows", rows, f">= {checks['min_rows']}",
                                   rows >= checks["min_rows"]))
    if "max_rows" in checks:
        results.append(CheckResult(f"{base}.max_rows", "rows", rows, f"<= {checks['max_rows']}",
                                   rows <= checks["max_rows"]))
    for name, spec in (checks.get("columns") or {}).items():
        here, where = statistics["columns"][name], f"{base}.columns.{name}"
        if "max_null_fraction" in spec:
            results.append(CheckResult(f"{where}.max_null_fraction", "null fraction", here["null_fraction"],
                                       f"<= {spec['max_null_fraction']}",
                                       here["null_fraction"] <= spec["max_null_fraction"], name))
        if "range" in spec and "min" in here:
            low, high = spec["range"]
            results.append(CheckResult(f"{where}.range", "min..max", [here["min"], here["max"]],
                                       f"within [{low}, {high}]", low <= here["min"] and here["max"] <= high, name))
        if "allowed_values" in spec:
            allowed = {_value_key(v) for v in spec["allowed_values"]}
            outside = sorted(set(here.get("values", {})) - allowed)[:10]
            results.append(CheckResult(f"{where}.allowed_values", "values outside the allowed", outside,
                                       f"none outside {sorted(allowed)}", not outside, name))
        before = ((previous or {}).get("columns") or {}).get(name)
        if "max_mean_shift" in spec and before and "mean" in before and "mean" in here:
            shift = round(abs(here["mean"] - before["mean"]), 6)
            results.append(CheckResult(f"{where}.max_mean_shift", "mean shift against the last published day",
                                       shift, f"<= {spec['max_mean_shift']}", shift <= spec["max_mean_shift"], name))
        if ("max_psi" in spec and before and "histogram" in before and "histogram" in here
                and before["histogram"]["edges"] == here["histogram"]["edges"]):
            value = round(psi(before["histogram"]["counts"], here["histogram"]["counts"]), 6)
            results.append(CheckResult(f"{where}.max_psi", "PSI against the last published day", value,
                                       f"<= {spec['max_psi']}", value <= spec["max_psi"], name))
    return results
