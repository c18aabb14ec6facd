"""Column types by name, as a DAG config writes them (``float64``, ``timestamp[us, tz=UTC]``, ``decimal128(12, 2)``).

:func:`type_name_error` checks a name without pyarrow (the DAG config is validated at parse time, where
pyarrow is not imported); :func:`arrow_type` turns a checked name into a ``pyarrow.DataType`` in a task.
The names are pyarrow's own (``str(pa.float64())`` is ``"double"``, also accepted), so a schema read from a
Parquet file and written to ``_manifest.json`` reads back the same.
"""

from __future__ import annotations

import re
from typing import Any

_SIMPLE = {
    "bool": "bool_", "boolean": "bool_",
    "int8": "int8", "int16": "int16", "int32": "int32", "int64": "int64",
    "uint8": "uint8", "uint16": "uint16", "uint32": "uint32", "uint64": "uint64",
    "float32": "float32", "float": "float32", "float64": "float64", "double": "float64",
    "string": "string", "utf8": "string", "large_string": "large_string", "binary": "binary",
    "date32": "date32", "date32[day]": "date32",
}
_TIMESTAMP = re.compile(r"^timestamp\[(s|ms|us|ns)(?:,\s*tz=([A-Za-z0-9_+\-/:]+))?\]$")
_DECIMAL = re.compile(r"^decimal(128|256)?\((\d+),\s*(-?\d+)\)$")
#: What a config can name, for error messages.
KNOWN = ("bool, int8..int64, uint8..uint64, float32, float64, string, large_string, binary, date32, "
         "timestamp[s|ms|us|ns] or timestamp[us, tz=UTC], decimal128(precision, scale)")


def type_name_error(name: object) -> str | None:
    """Why ``name`` is not a column type this package knows, or None when it is one."""
    if not isinstance(name, str):
        return f"expected a type name, got {name!r}"
    text = name.strip()
    if text in _SIMPLE or _TIMESTAMP.match(text):
        return None
    decimal = _DECIMAL.match(text)
    if decimal:
        precision, scale = int(decimal.group(2)), int(decimal.group(3))
        limit = 76 if decimal.group(1) == "256" else 38
        if not 1 <= precision <= limit or scale > precision:
            return f"{text!r}: precision must be 1-{limit} and scale at most the precision"
        return None
    return f"unknown type {text!r}; expected one of {KNOWN}"


def arrow_type(name: str) -> Any:
    """The ``pyarrow.DataType`` that ``name`` names (checked with :func:`type_name_error` first)."""
    import pyarrow as pa

    error = type_name_error(name)
    if error:
        raise ValueError(error)
    text = name.strip()
    if text in _SIMPLE:
        return getattr(pa, _SIMPLE[text])()
    stamp = _TIMESTAMP.match(text)
    if stamp:
        return pa.timestamp(stamp.group(1), tz=stamp.group(2))
    decimal = _DECIMAL.match(text)
    assert decimal is not None
    make = pa.decimal256 if decimal.group(1) == "256" else pa.decimal128
    return make(int(decimal.group(2)), int(decimal.group(3)))


def type_names_error(types: object, *, allowed: list[str] | None = None) -> str | None:
    """Why a ``{column: type name}`` mapping is wrong (a bad name, a column not in ``allowed``), or None."""
    if not isinstance(types, dict):
        return f"expected a mapping of column name to type, got {type(types).__name__}"
    for column, name in types.items():
        if allowed is not None and column not in allowed:
            return f"column {column!r} is not one of {allowed}"
        error = type_name_error(name)
        if error:
            return f"column {column!r}: {error}"
    return None
