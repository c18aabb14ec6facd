"""Templated values back to what they mean: Jinja renders every value as text (``30`` becomes ``"30"``).

Every operator reads its numbers and flags through these, in ``execute``, so a bad value fails the task
at once — :class:`AirflowFailException`, no retry — with the parameter's name and the value given,
instead of a ``ValueError`` deep inside that the task retries.
"""

from __future__ import annotations

from typing import Any

from airflow_bt.compat import AirflowFailException

_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off", "none", "")


def as_bool(name: str, value: Any) -> bool:
    """``True``/``False``, or their rendered spellings (``"True"``, ``"false"``, ``"1"``, ``"yes"``, ...)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise AirflowFailException(f"{name} must be true or false, got {value!r}")


def as_number(name: str, value: Any, *, minimum: float | None = 0.0, maximum: float | None = None) -> float | None:
    """A rendered number back as a float; ``None`` and ``""`` stay unset (``None``)."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise AirflowFailException(f"{name} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise AirflowFailException(f"{name} must be a number, got {value!r}") from None
    if number != number:  # NaN
        raise AirflowFailException(f"{name} must be a number, got {value!r}")
    if minimum is not None and number < minimum:
        raise AirflowFailException(f"{name} must be at least {minimum:g}, got {value!r}")
    if maximum is not None and number > maximum:
        raise AirflowFailException(f"{name} must be at most {maximum:g}, got {value!r}")
    return number


def as_int(name: str, value: Any, *, minimum: int | None = 0, maximum: int | None = None) -> int | None:
    """A rendered whole number back as an int (``"4"``, ``4``, ``4.0``); ``None`` and ``""`` stay unset."""
    number = as_number(name, value, minimum=minimum, maximum=maximum)
    if number is None:
        return None
    if not number.is_integer():
        raise AirflowFailException(f"{name} must be a whole number, got {value!r}")
    return int(number)


def required_int(name: str, value: Any, *, minimum: int | None = 0, maximum: int | None = None) -> int:
    """:func:`as_int` for a parameter that must be set."""
    number = as_int(name, value, minimum=minimum, maximum=maximum)
    if number is None:
        raise AirflowFailException(f"{name} must be a whole number, got {value!r}")
    return number


def required_number(name: str, value: Any, *, minimum: float | None = 0.0, maximum: float | None = None) -> float:
    """:func:`as_number` for a parameter that must be set."""
    number = as_number(name, value, minimum=minimum, maximum=maximum)
    if number is None:
        raise AirflowFailException(f"{name} must be a number, got {value!r}")
    return number
