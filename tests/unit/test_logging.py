"""The fields log lines about one message carry: where it is, and its business event id."""

from __future__ import annotations

import doctest

import shared.logging
from shared.logging import message_fields


def test_examples_in_the_docstrings_hold() -> None:
    assert doctest.testmod(shared.logging).failed == 0


def test_a_message_without_a_textual_event_id_is_logged_by_its_place_alone() -> None:
    place = {"topic": "t", "partition": 0, "offset": 1}
    for value in (None, b"", b"[1, 2]", b'{"event_id": 7}', b'{"label": "x"}', b"\xff"):
        assert message_fields("t", 0, 1, value) == place, value
    assert message_fields("t", 0, 1, b'{"event_id": "e-1"}') == {**place, "event_id": "e-1"}
