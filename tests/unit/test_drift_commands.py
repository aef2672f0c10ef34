"""`driftline alerts` argument handling that needs no broker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
from aiokafka.structs import ConsumerRecord

import shared.admin
from services.drift.commands import SinceError, parse_since, read_alerts
from shared.errors import DriftlineError
from shared.events import DriftAlert, encode
from shared.settings import DriftlineSettings
from tests.support.samples import SAMPLES

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


@pytest.mark.parametrize("text", ["yesterday", "99999999999d"])
def test_since_that_is_neither_says_what_it_expects(text: str) -> None:
    with pytest.raises(SinceError, match="expected a duration") as caught:
        parse_since(text, NOW)
    assert isinstance(caught.value, DriftlineError)
    assert parse_since("1h", NOW.astimezone(timezone(timedelta(hours=2)))) == NOW - timedelta(
        hours=1
    )


async def test_an_alert_whose_time_lies_outside_utc_is_skipped_with_a_note(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    good = encode(SAMPLES[DriftAlert])
    bad = good.replace(
        b'"event_time":"2026-01-01T10:00:00Z"', b'"event_time":"0001-01-01T00:00:00+14:00"'
    )
    assert bad != good

    async def records(*_: object, **__: object) -> AsyncIterator[ConsumerRecord]:
        for offset, value in enumerate([bad, good]):
            yield ConsumerRecord("alerts", 0, offset, 0, 0, None, value, None, 0, 0, ())

    monkeypatch.setattr(shared.admin, "read_topic", records)  # read_alerts imports it on use
    found = [a async for a in read_alerts(DriftlineSettings(), True, True)]
    assert found == [SAMPLES[DriftAlert]]
    assert "skipped alerts[0]@0" in capsys.readouterr().err
