"""`driftline alerts` argument handling that needs no broker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from services.drift.commands import SinceError, parse_since
from shared.errors import DriftlineError

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", NOW - timedelta(seconds=30)),
        ("15m", NOW - timedelta(minutes=15)),
        ("2h", NOW - timedelta(hours=2)),
        ("7d", NOW - timedelta(days=7)),
        ("2026-02-28T08:00:00", datetime(2026, 2, 28, 8, tzinfo=UTC)),
        ("2026-02-28T08:00:00+01:00", datetime(2026, 2, 28, 7, tzinfo=UTC)),
    ],
)
def test_since_takes_a_duration_or_an_iso_time(text: str, expected: datetime) -> None:
    assert parse_since(text, NOW) == expected


def test_since_that_is_neither_says_what_it_expects() -> None:
    with pytest.raises(SinceError, match="expected a duration") as caught:
        parse_since("yesterday", NOW)
    assert isinstance(caught.value, DriftlineError)
    assert parse_since("1h", NOW.astimezone(timezone(timedelta(hours=2)))) == NOW - timedelta(
        hours=1
    )
