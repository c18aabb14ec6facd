"""The JSONPath subset Batch Transform's ``DataProcessing`` filters accept.

==========================  ================================================================
operator                    selects
==========================  ================================================================
``$``                       the whole record (required first)
``.name``, ``['name']``     a member of an object
``['a','b']``               an object with just those members, in that order
``[i]``                     element ``i`` of an array; negative counts from the end (-1 = last)
``[i,j]``                   an array of those elements, in that order
``[start:end]``             an array slice; either bound may be omitted or negative
``*``, ``[*]``              every member (of an object) or element (of an array), as an array
==========================  ================================================================

Unions may mix indexes and slices (``$[0,5:]``). Steps after a multi-selection apply to
each selected item. Slices follow the JsonPath library the SageMaker guide refers to (and
JavaScript's ``slice``, which its operator table cites): ``start`` is included, ``end`` is
not, so ``$[1:3]`` is the second and third column. (The guide's prose example reads
``$[1:4]`` as "second through fifth column"; we follow the operator definition.)

A selection that does not exist (a missing member, an index outside the array) is an
error, as in the service ("If you specify indexes that aren't within the dimension size of
the joined dataset, you get an error"); slices are clamped to the array.

>>> JsonPath.parse("$[1:]").select(["id", "1", "2"])
['1', '2']
>>> JsonPath.parse("$['id','SageMakerOutput']").select({"id": 7, "x": 1, "SageMakerOutput": 0.5})
{'id': 7, 'SageMakerOutput': 0.5}
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_NAME_RE = re.compile(r"[A-Za-z_$@\-][\w$@\-]*")
_INT_RE = re.compile(r"-?\d+")
_QUOTED_RE = re.compile(r"""'((?:[^'\\]|\\.)*)'|"((?:[^"\\]|\\.)*)\"""")


class JsonPathSyntaxError(ValueError):
    """The expression is not in the supported JSONPath subset."""


class JsonPathSelectError(ValueError):
    """The expression selects something the record does not have."""


@dataclass(frozen=True)
class _Step:
    kind: str  # "name", "names", "index", "union", "wildcard"
    names: tuple[str, ...] = ()
    items: tuple[int | slice, ...] = ()


@dataclass(frozen=True)
class JsonPath:
    """A parsed expression; :meth:`select` applies it to one decoded record."""

    text: str
    steps: tuple[_Step, ...]

    @property
    def is_root(self) -> bool:
        """True for ``$`` (and the empty filter), which selects the record unchanged."""
        return not self.steps

    @property
    def index_only(self) -> bool:
        """True if every step is an index, slice or wildcard (what a CSV row, an array, allows)."""
        return all(step.kind in ("index", "union", "wildcard") for step in self.steps)

    @classmethod
    def parse(cls, text: str) -> JsonPath:
        """Parse ``text``; raise :class:`JsonPathSyntaxError` saying where it went wrong."""
        if text in ("", "$"):
            return cls(text, ())
        if not text.startswith("$"):
            raise JsonPathSyntaxError(f"{text!r} must start with '$'")
        steps: list[_Step] = []
        pos = 1
        while pos < len(text):
            char = text[pos]
            if char == ".":
                pos += 1
                if text.startswith("*", pos):
                    steps.append(_Step("wildcard"))
                    pos += 1
                    continue
                if text.startswith("[", pos):  # $.field.['a','b'] is accepted, as the guide shows
                    continue
                match = _NAME_RE.match(text, pos)
                if not match:
                    raise JsonPathSyntaxError(f"{text!r}: expected a member name after '.' at position {pos}")
                steps.append(_Step("name", names=(match.group(),)))
                pos = match.end()
            elif char == "[":
                end = text.find("]", pos)
                if end < 0:
                    raise JsonPathSyntaxError(f"{text!r}: '[' at position {pos} is never closed")
                steps.append(_bracket(text, text[pos + 1:end].strip(), pos))
                pos = end + 1
            else:
                raise JsonPathSyntaxError(f"{text!r}: unexpected {char!r} at position {pos}; supported: "
                                          "$, .name, *, ['a','b'], [i,j], [start:end]")
        return cls(text, tuple(steps))

    def select(self, value: Any) -> Any:
        """The part of ``value`` (a decoded JSON record, or a CSV row as a list) the path selects."""
        return _select(value, self.steps, self.text)


def _bracket(text: str, inner: str, pos: int) -> _Step:
    if inner == "*":
        return _Step("wildcard")
    parts = [p.strip() for p in inner.split(",")]
    if not inner or any(not p for p in parts):
        raise JsonPathSyntaxError(f"{text!r}: empty selector in brackets at position {pos}")
    if parts[0][:1] in ("'", '"'):
        names = []
        for part in parts:
            match = _QUOTED_RE.fullmatch(part)
            if not match:
                raise JsonPathSyntaxError(f"{text!r}: expected quoted names like ['a','b'] at position {pos}, "
                                          f"got {part!r}")
            raw = match.group(1) if match.group(1) is not None else match.group(2)
            names.append(re.sub(r"\\(.)", r"\1", raw))
        return _Step("name" if len(names) == 1 else "names", names=tuple(names))
    items: list[int | slice] = []
    for part in parts:
        if ":" in part:
            bounds = [b.strip() for b in part.split(":")]
            if len(bounds) != 2 or any(b and not _INT_RE.fullmatch(b) for b in bounds):
                raise JsonPathSyntaxError(f"{text!r}: expected a slice like [start:end] at position {pos}, "
                                          f"got {part!r}")
            items.append(slice(int(bounds[0]) if bounds[0] else None, int(bounds[1]) if bounds[1] else None))
        elif _INT_RE.fullmatch(part):
            items.append(int(part))
        else:
            raise JsonPathSyntaxError(f"{text!r}: expected indexes, slices or quoted names in brackets at "
                                      f"position {pos}, got {part!r}")
    if len(items) == 1 and isinstance(items[0], int):
        return _Step("index", items=tuple(items))
    return _Step("union", items=tuple(items))


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return f"an array of {len(value)}"
    return f"a {type(value).__name__}"


def _member(value: Any, name: str, text: str) -> Any:
    if not isinstance(value, dict):
        raise JsonPathSelectError(f"{text}: cannot select member {name!r} of {_describe(value)}")
    if name not in value:
        raise JsonPathSelectError(f"{text}: the record has no member {name!r}")
    return value[name]


def _element(value: list[Any], index: int, text: str) -> Any:
    if not -len(value) <= index < len(value):
        raise JsonPathSelectError(f"{text}: index {index} is outside the record's {len(value)} elements")
    return value[index]


def _select(value: Any, steps: tuple[_Step, ...], text: str) -> Any:
    if not steps:
        return value
    step, rest = steps[0], steps[1:]
    if step.kind == "name":
        return _select(_member(value, step.names[0], text), rest, text)
    if step.kind == "names":
        return {name: _select(_member(value, name, text), rest, text) for name in step.names}
    if step.kind == "wildcard":
        if isinstance(value, dict):
            return [_select(v, rest, text) for v in value.values()]
        if isinstance(value, list):
            return [_select(v, rest, text) for v in value]
        raise JsonPathSelectError(f"{text}: '*' needs an object or an array, got {_describe(value)}")
    if not isinstance(value, list):
        raise JsonPathSelectError(f"{text}: indexes need an array, got {_describe(value)}")
    if step.kind == "index":
        return _select(_element(value, step.items[0], text), rest, text)  # type: ignore[arg-type]
    picked: list[Any] = []
    for item in step.items:
        if isinstance(item, slice):
            picked.extend(value[item])
        else:
            picked.append(_element(value, item, text))
    return [_select(v, rest, text) for v in picked]
