"""Timestamps past 2038-01-19 on 32-bit time_t (armhf, ``make test-arm``): datetime's
fromtimestamp and time.gmtime raise OverflowError there. A gateway with a wrong clock may stamp
such a time; readings must still encode, on every architecture."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from agent.forward.encoders.native import parse_iso_ms
from drivers.core.reading import Reading, iso_ms

CASES = [
    (2**31 * 1000 + 5, "2038-01-19T03:14:08.005Z"),  # one second past 32-bit time_t
    (4102444800000, "2100-01-01T00:00:00.000Z"),
    (0, "1970-01-01T00:00:00.000Z"),  # a Pi without RTC before NTP
    (-1, "1969-12-31T23:59:59.999Z"),
    (1764590400123, "2025-12-01T12:00:00.123Z"),
]


@pytest.mark.parametrize(("ms", "text"), CASES)
def test_iso_ms_and_back_on_every_architecture(ms: int, text: str) -> None:
    assert iso_ms(ms) == text
    assert parse_iso_ms(text) == ms


def test_observed_at_past_2038() -> None:
    r = Reading("gw", "d", "kind", "p", "m", 1.0, None, None, 2**31 * 1000 + 5)
    assert r.observed_at == datetime(2038, 1, 19, 3, 14, 8, 5000, tzinfo=UTC)
    assert r.to_dict()["observedAt"] == "2038-01-19T03:14:08.005Z"
