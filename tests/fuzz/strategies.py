"""What the fuzz tests feed: arbitrary bytes, JSON-shaped mutations of a valid record (any value
anywhere replaced by a hostile one), and hostile values on their own."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

from shared.events import Event, encode

HOSTILE_NUMBERS = st.sampled_from(
    [
        float("nan"),
        float("inf"),
        -float("inf"),
        1e308,
        1.7e308,
        -1.7e308,
        1e100,
        -1e100,
        1.0000000000000002e100,
        5e-324,
        -0.0,
        10**400,
        -(10**400),
        2**63,
        -(2**63) - 1,
        10**100,
    ]
)
HOSTILE_TIMES = st.sampled_from(
    [
        "0001-01-01T00:00:00+14:00",
        "9999-12-31T23:59:59-14:00",
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59.999999Z",
        "1969-12-31T23:59:59Z",
        "2026-02-30T00:00:00Z",
        -62135596800,
        253402300799,
        1e20,
        "",
    ]
)
SCALARS = st.one_of(
    HOSTILE_NUMBERS,
    HOSTILE_TIMES,
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
"""Any JSON value, hostile numbers and times preferred (json writes NaN and huge integers)."""


def _paths(document: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON document a value can be replaced or added."""
    found = [prefix] if prefix else []
    if isinstance(document, dict):
        for key, value in document.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            found += _paths(value, (*prefix, index))
    return found


def _replaced(document: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(document, dict):
        return {**document, head: _replaced(document.get(head), rest, value)}
    copy = list(document)
    copy[head] = _replaced(copy[head], rest, value)
    return copy


@st.composite
def mutated(draw: st.DrawFn, record: Event, values: st.SearchStrategy[Any] = JSON_VALUES) -> bytes:
    """`record` on the wire with one to three of its values (anywhere) replaced by `values`."""
    document: Any = json.loads(encode(record))
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(document)
        path = draw(st.sampled_from(paths)) if paths else ()
        document = _replaced(document, path, draw(values))
    return json.dumps(document).encode()


def _like(value: Any) -> st.SearchStrategy[Any]:
    """Hostile values of the same shape as `value`: numbers for a number, times or text for
    text, anything for the rest."""
    if isinstance(value, bool):
        return st.one_of(st.booleans(), HOSTILE_NUMBERS)
    if isinstance(value, int | float):
        return st.one_of(HOSTILE_NUMBERS, st.floats(), st.integers())
    if isinstance(value, str):
        return st.one_of(HOSTILE_TIMES, st.text(max_size=20))
    return JSON_VALUES


@st.composite
def schema_shaped(draw: st.DrawFn, record: Event) -> bytes:
    """`record` on the wire with one to three of its leaves replaced by hostile values of the
    same shape (an extreme number for a number, an extreme time for a time)."""
    document: Any = json.loads(encode(record))
    for _ in range(draw(st.integers(1, 3))):
        leaves = [p for p in _paths(document) if not isinstance(_at(document, p), dict | list)]
        path = draw(st.sampled_from(leaves))
        document = _replaced(document, path, draw(_like(_at(document, path))))
    return json.dumps(document).encode()


def _at(document: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        document = document[part]
    return document
