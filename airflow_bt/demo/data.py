"""Synthetic customer-churn data for the demo and the benchmarks.

Everything is generated with vectorised numpy and written as CSV without pandas: each
chunk of rows is rendered into a byte matrix (one row per record, one column per output
byte) plus a mask of the bytes that belong to the text, and ``matrix[mask]`` is the CSV
text of the whole chunk. That keeps generation at several million rows per second and
memory constant in the number of rows (chunks of ``CHUNK_ROWS``).

Output is deterministic for ``(ds, seed, rows, files)``.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

#: Scoring input columns, in file order (there is no label column in scoring input).
COLUMNS: tuple[str, ...] = (
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
)
CATEGORICAL_COLUMNS: tuple[str, ...] = ("plan", "region")
#: Columns the model ignores (identifiers / raw dates).
ID_COLUMNS: tuple[str, ...] = ("customer_id", "signup_date")
#: Every other column, in file order, is a numeric feature.
NUMERIC_COLUMNS: tuple[str, ...] = tuple(c for c in COLUMNS if c not in CATEGORICAL_COLUMNS + ID_COLUMNS)

PLANS: tuple[str, ...] = ("basic", "standard", "premium")
PLAN_WEIGHTS = (0.45, 0.35, 0.20)
REGIONS: tuple[str, ...] = ("us-east", "us-west", "eu-central", "ap-south")
REGION_WEIGHTS = (0.35, 0.25, 0.25, 0.15)

#: Rows rendered per chunk: bounds memory at roughly 100 bytes x 2 x CHUNK_ROWS.
CHUNK_ROWS = 100_000
#: customer_id is "C" + 8 digits, so at most 10**8 distinct ids per day.
MAX_ROWS_PER_PARTITION = 10**8
_ID_HALF = 10**4
FILE_NAME = "customers-{:04d}.csv"
_FILE_RE = re.compile(r"^customers-\d{4}\.csv$")
_TRAINING_DS = "2026-05-31"
HEADER = (",".join(COLUMNS) + "\n").encode("ascii")


# ---------------------------------------------------------------------------------------------
# feature generation
# ---------------------------------------------------------------------------------------------


def _parse_ds(ds: str) -> dt.date:
    try:
        return dt.date.fromisoformat(ds)
    except ValueError as exc:
        raise ValueError(f"ds must be a date YYYY-MM-DD, got {ds!r}") from exc


def _ds_key(day: dt.date) -> int:
    return day.year * 10_000 + day.month * 100 + day.day


def _id_keys(seed: int, day: dt.date) -> np.ndarray:
    """Round tables of the day's customer-id permutation (see ``_customer_ids``)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, _ds_key(day), 0]))
    return rng.integers(0, _ID_HALF, size=(4, _ID_HALF), dtype=np.int64)


def _customer_ids(index: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Map row numbers to random-looking, unique ids in [0, 10**8) (a 4-round Feistel network)."""
    left, right = index // _ID_HALF, index % _ID_HALF
    for table in keys:
        left, right = right, (left + table[right]) % _ID_HALF
    return left * _ID_HALF + right


def _features(rng: np.random.Generator, n: int, day: dt.date) -> dict[str, np.ndarray]:
    """Draw ``n`` customers as of ``day``; ``signup_date`` is a ``datetime64[D]`` array."""
    plan = rng.choice(len(PLANS), size=n, p=PLAN_WEIGHTS).astype(np.int8)
    region = rng.choice(len(REGIONS), size=n, p=REGION_WEIGHTS).astype(np.int8)
    # Tenure: a bump of recent sign-ups plus a long tail of loyal customers, 0..72 months.
    recent = rng.random(n) < 0.3
    loyal = np.minimum(rng.exponential(26.0, n), 72.0)
    tenure = np.where(recent, rng.integers(0, 7, n), loyal).astype(np.int64)
    num_products = 1 + rng.binomial(4, 0.28 + 0.08 * plan, n)
    base = np.array([29.99, 59.99, 99.99])[plan]
    monthly = base + 6.5 * (num_products - 1) + rng.normal(0.0, 4.0, n)
    monthly_cents = np.maximum(np.rint(monthly * 100).astype(np.int64), 999)
    billed_months = np.maximum(tenure, 1)
    total_cents = np.rint(monthly_cents * billed_months * rng.uniform(0.93, 1.04, n)).astype(np.int64)
    support_calls = np.minimum(rng.poisson(0.8 + 0.7 * (plan == 0) + 0.9 * recent, n), 25)
    engaged = rng.random(n) < 0.8
    last_login = np.where(engaged, rng.exponential(6.0, n), rng.exponential(60.0, n))
    last_login_days = np.minimum(last_login, 365.0).astype(np.int64)
    autopay = (rng.random(n) < 0.45 + 0.12 * plan + 0.004 * tenure).astype(np.int64)
    age = np.clip(np.rint(rng.normal(44.0, 14.0, n)), 18, 90).astype(np.int64)
    # Sign-up date consistent with the tenure: tenure whole months plus up to a month ago.
    days_back = np.rint(tenure * 30.44 + rng.integers(0, 30, n)).astype(np.int64)
    signup = np.datetime64(day.isoformat(), "D") - days_back.astype("timedelta64[D]")
    return {
        "signup_date": signup,
        "plan": plan,
        "region": region,
        "tenure_months": tenure,
        "monthly_cents": monthly_cents,
        "total_cents": total_cents,
        "support_calls": support_calls.astype(np.int64),
        "last_login_days": last_login_days,
        "num_products": num_products.astype(np.int64),
        "autopay": autopay,
        "age": age,
    }


def _churn_probability(f: dict[str, np.ndarray]) -> np.ndarray:
    """The true churn probability behind the labels (logistic of plausible drivers)."""
    logit = (
        -2.0
        + 1.3 * np.exp(-f["tenure_months"] / 8.0)  # new customers churn
        - 0.012 * f["tenure_months"]
        + 0.38 * f["support_calls"]
        + 0.9 * np.log1p(f["last_login_days"] / 14.0)  # disengaged customers churn
        - 0.75 * f["autopay"]
        + 0.45 * (f["plan"] == 0)
        - 0.35 * (f["plan"] == 2)
        + 0.012 * (f["monthly_cents"] / 100.0 - 60.0)
        - 0.25 * (f["num_products"] - 1)
        + 0.25 * (f["region"] == 3)
        - 0.01 * (f["age"] - 44)
    )
    return 1.0 / (1.0 + np.exp(-logit))


# ---------------------------------------------------------------------------------------------
# vectorised CSV rendering
# ---------------------------------------------------------------------------------------------

_Piece = tuple[np.ndarray, np.ndarray]  # (uint8 bytes (w, n), bool mask (w, n)), column-major


def _digits(values: np.ndarray, width: int, pad: bool = False) -> _Piece:
    """ASCII digits of non-negative integers, right-aligned in ``width`` columns.

    With ``pad`` every position is kept (zero padding); otherwise leading zeros are masked out.
    Pieces are column-major, shape ``(width, n)``: dividing by a scalar is much faster.
    """
    n = values.shape[0]
    quot = values.astype(np.int32)
    chars = np.empty((width, n), dtype=np.uint8)
    for j in range(width - 1, -1, -1):
        np.add(quot % 10, 48, out=chars[j], casting="unsafe")
        quot //= 10
    if pad:
        return chars, np.ones((width, n), dtype=bool)
    mask = np.empty((width, n), dtype=bool)
    for j in range(width - 1):
        np.greater_equal(values, 10 ** (width - 1 - j), out=mask[j])
    mask[width - 1] = True
    return chars, mask


def _const(text: str, n: int) -> _Piece:
    raw = np.frombuffer(text.encode("ascii"), dtype=np.uint8)
    return np.broadcast_to(raw[:, None], (raw.size, n)), np.ones((raw.size, n), dtype=bool)


def _choice_table(words: tuple[str, ...]) -> _Piece:
    width = max(len(w) for w in words)
    chars = np.zeros((width, len(words)), dtype=np.uint8)
    mask = np.zeros((width, len(words)), dtype=bool)
    for i, word in enumerate(words):
        chars[: len(word), i] = np.frombuffer(word.encode("ascii"), dtype=np.uint8)
        mask[: len(word), i] = True
    return chars, mask


_PLAN_TABLE = _choice_table(PLANS)
_REGION_TABLE = _choice_table(REGIONS)


def _words(table: _Piece, codes: np.ndarray) -> _Piece:
    return table[0][:, codes], table[1][:, codes]


def _cents(cents: np.ndarray) -> list[_Piece]:
    """A non-negative amount in cents as ``units.cc``."""
    width = max(1, len(str(int(cents.max(initial=0)) // 100)))
    n = cents.shape[0]
    return [_digits(cents // 100, width), _const(".", n), _digits(cents % 100, 2, pad=True)]


def _dates(days: np.ndarray) -> list[_Piece]:
    """``datetime64[D]`` values as ``YYYY-MM-DD``."""
    years = days.astype("datetime64[Y]")
    months = days.astype("datetime64[M]")
    year = years.astype(np.int64) + 1970
    month = (months - years.astype("datetime64[M]")).astype(np.int64) + 1
    day = (days - months.astype("datetime64[D]")).astype(np.int64) + 1
    n = days.shape[0]
    return [
        _digits(year, 4, pad=True),
        _const("-", n),
        _digits(month, 2, pad=True),
        _const("-", n),
        _digits(day, 2, pad=True),
    ]


def _int_width(values: np.ndarray) -> int:
    return max(1, len(str(int(values.max(initial=0)))))


def _render(ids: np.ndarray, f: dict[str, np.ndarray]) -> bytes:
    """CSV text (no header) of one chunk."""
    n = ids.shape[0]
    comma = _const(",", n)
    pieces: list[_Piece] = [_const("C", n), _digits(ids, 8, pad=True), comma]
    pieces += [*_dates(f["signup_date"]), comma]
    pieces += [_words(_PLAN_TABLE, f["plan"]), comma, _words(_REGION_TABLE, f["region"]), comma]
    pieces += [_digits(f["tenure_months"], _int_width(f["tenure_months"])), comma]
    pieces += [*_cents(f["monthly_cents"]), comma, *_cents(f["total_cents"]), comma]
    for name in ("support_calls", "last_login_days", "num_products", "autopay", "age"):
        pieces += [_digits(f[name], _int_width(f[name])), comma]
    pieces[-1] = _const("\n", n)
    chars = np.concatenate([p[0] for p in pieces], axis=0).T
    mask = np.concatenate([p[1] for p in pieces], axis=0).T
    return chars[mask].tobytes()


def _id_strings(ids: np.ndarray) -> np.ndarray:
    chars = np.concatenate([_const("C", ids.shape[0])[0], _digits(ids, 8, pad=True)[0]], axis=0)
    return np.ascontiguousarray(chars.T).view("S9").ravel().astype(str)


def _date_strings(days: np.ndarray) -> np.ndarray:
    return np.datetime_as_string(days, unit="D")


# ---------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------


def split_rows(rows: int, files: int) -> list[int]:
    """Rows per file when ``rows`` are split as evenly as possible over ``files`` files."""
    if rows < 0 or files < 1:
        raise ValueError(f"need rows >= 0 and files >= 1, got rows={rows}, files={files}")
    return [rows // files + (1 if k < rows % files else 0) for k in range(files)]


def _chunks(count: int, size: int) -> Iterator[int]:
    while count > 0:
        step = min(size, count)
        yield step
        count -= step


def generate_partition(folder: str, ds: str, rows: int, files: int = 4, seed: int = 0) -> list[str]:
    """Write one day's scoring input as ``folder/customers-0001.csv`` ... ``customers-000N.csv``.

    Each file has a header row; ``rows`` are split evenly over ``files`` files. customer_id is
    unique within the day. The output is deterministic for ``(ds, seed, rows, files)``. Stale
    ``customers-NNNN.csv`` files from an earlier call with more files are removed.

    Returns the paths written, in order.
    """
    day = _parse_ds(ds)
    if rows > MAX_ROWS_PER_PARTITION:
        raise ValueError(f"at most {MAX_ROWS_PER_PARTITION} rows per partition, got {rows}")
    counts = split_rows(rows, files)
    out_dir = Path(folder)
    out_dir.mkdir(parents=True, exist_ok=True)
    id_keys = _id_keys(seed, day)
    paths: list[str] = []
    start = 0
    for k, count in enumerate(counts):
        rng = np.random.default_rng(np.random.SeedSequence([seed, _ds_key(day), k + 1]))
        path = out_dir / FILE_NAME.format(k + 1)
        with open(path, "wb") as fh:
            fh.write(HEADER)
            for n in _chunks(count, CHUNK_ROWS):
                ids = _customer_ids(np.arange(start, start + n, dtype=np.int64), id_keys)
                fh.write(_render(ids, _features(rng, n, day)))
                start += n
        paths.append(str(path))
    wanted = {Path(p).name for p in paths}
    for stale in out_dir.iterdir():
        if _FILE_RE.match(stale.name) and stale.name not in wanted:
            stale.unlink()
    return paths


def generate_training_set(rows: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Labelled customers for training: ``(features with COLUMNS, churn labels 0/1)``.

    The label is drawn from a logistic model of plausible churn drivers (short tenure, many
    support calls, a long time since the last login, no autopay, the basic plan, ...).
    """
    day = _parse_ds(_TRAINING_DS)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 20_000_000 + _ds_key(day)]))
    f = _features(rng, rows, day)
    labels = (rng.random(rows) < _churn_probability(f)).astype(np.int64)
    ids = _customer_ids(np.arange(rows, dtype=np.int64), _id_keys(seed + 1_000_003, day))
    frame = pd.DataFrame(
        {
            "customer_id": _id_strings(ids),
            "signup_date": _date_strings(f["signup_date"]),
            "plan": np.asarray(PLANS, dtype=object)[f["plan"]],
            "region": np.asarray(REGIONS, dtype=object)[f["region"]],
            "tenure_months": f["tenure_months"],
            "monthly_charges": f["monthly_cents"] / 100.0,
            "total_charges": f["total_cents"] / 100.0,
            "support_calls": f["support_calls"],
            "last_login_days": f["last_login_days"],
            "num_products": f["num_products"],
            "autopay": f["autopay"],
            "age": f["age"],
        },
        columns=list(COLUMNS),
    )
    return frame, labels


def _dates_between(start: str, end: str) -> list[str]:
    first, last = _parse_ds(start), _parse_ds(end)
    if last < first:
        raise ValueError(f"end {end} is before start {start}")
    return [(first + dt.timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def _local_root(root_path: str) -> Path:
    if root_path.startswith("file://"):
        root_path = root_path[len("file://") :]
    elif "://" in root_path:
        raise ValueError(f"generate_range writes local files only, got {root_path!r}")
    return Path(os.path.expanduser(root_path))


def partition_folder(root_path: str, model: str, ds: str) -> str:
    """``<root>/input/<model>/dt=<ds>`` (the upstream-owned scoring input of one day)."""
    return str(_local_root(root_path) / "input" / model / f"dt={ds}")


def generate_range(
    root_path: str,
    model: str = "churn",
    start: str | None = None,
    end: str | None = None,
    rows: int = 100_000,
    files: int = 4,
    seed: int = 0,
    parquet: bool = False,
) -> list[str]:
    """Write ``root/input/<model>/dt=<ds>/customers-000k.csv`` for every ds in ``[start, end]``.

    ``root_path`` is a local path or a ``file://`` URI; ``rows`` is per day (split over
    ``files`` files); ``end`` defaults to ``start``. With ``parquet``, also the typed Parquet copy of
    each day, ``root/input/<model>_parquet/dt=<ds>/customers-000k.parquet`` (:func:`csv_to_parquet`).
    Returns the CSV partition folders, in date order.
    """
    if start is None:
        raise ValueError("generate_range needs a start date (YYYY-MM-DD)")
    partitions = []
    for ds in _dates_between(start, end or start):
        folder = partition_folder(root_path, model, ds)
        generate_partition(folder, ds, rows, files=files, seed=seed)
        if parquet:
            parquet_copy(folder)
        partitions.append(folder)
    return partitions


#: The Parquet copy's column types (``csv_to_parquet``): the demo's CSV text, typed as a lake table has it.
PARQUET_TYPES: dict[str, str] = {
    "customer_id": "string",
    "signup_date": "date32",
    "plan": "string",
    "region": "string",
    "tenure_months": "int64",
    "monthly_charges": "float64",
    "total_charges": "float64",
    "support_calls": "int64",
    "last_login_days": "int64",
    "num_products": "int64",
    "autopay": "int64",
    "age": "int64",
}


def parquet_schema() -> Any:
    """The ``pyarrow.Schema`` of the Parquet copy (pyarrow is imported here, not at module import)."""
    import pyarrow as pa

    return pa.schema([pa.field(name, pa.type_for_alias(PARQUET_TYPES[name])) for name in COLUMNS])


def csv_to_parquet(src: str | os.PathLike[str], dst: str | os.PathLike[str], *, compression: str = "snappy") -> int:
    """Write the Parquet copy of one demo CSV file (typed as :data:`PARQUET_TYPES`, snappy, as an Athena
    ``UNLOAD`` or a Spark job writes); streams record batches, so memory does not grow with the file.

    Returns the rows written."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    schema = parquet_schema()
    convert = pacsv.ConvertOptions(column_types=schema, strings_can_be_null=False)
    rows = 0
    reader = pacsv.open_csv(src, convert_options=convert, read_options=pacsv.ReadOptions(block_size=8 << 20))
    with pq.ParquetWriter(dst, schema, compression=compression) as writer:
        for batch in reader:
            writer.write_batch(batch)
            rows += batch.num_rows
    return rows


def parquet_folder(folder: str) -> str:
    """Where the Parquet copy of the partition ``<root>/input/<model>/dt=<ds>`` goes:
    ``<root>/input/<model>_parquet/dt=<ds>``."""
    source = Path(folder)
    return str(source.parent.parent / (source.parent.name + "_parquet") / source.name)


def parquet_copy(folder: str) -> list[str]:
    """Write ``customers-NNNN.parquet`` for each ``customers-NNNN.csv`` of ``folder`` into
    :func:`parquet_folder` (stale copies removed) and return the paths, in order."""
    source = Path(folder)
    target = Path(parquet_folder(folder))
    target.mkdir(parents=True, exist_ok=True)
    paths = []
    for csv_file in sorted(p for p in source.iterdir() if _FILE_RE.match(p.name)):
        path = target / (csv_file.stem + ".parquet")
        csv_to_parquet(csv_file, path)
        paths.append(str(path))
    for stale in target.iterdir():
        if stale.suffix == ".parquet" and str(stale) not in paths:
            stale.unlink()
    return paths
