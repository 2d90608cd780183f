"""The log's time: what structlog's ISO UTC TimeStamper writes, made to the second once a
second (service/logs.py)."""

from __future__ import annotations

import datetime as dt

import pytest

from service import logs


def _structlogs_text(nanoseconds: int) -> str:
    moment = (dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
              + dt.timedelta(microseconds=nanoseconds // 1000))
    return moment.isoformat().replace("+00:00", "Z")


@pytest.mark.parametrize("nanoseconds", [
    1_764_921_600_000_000_000,  # a whole second: no fraction, as isoformat writes it
    1_764_921_600_000_999_999,  # under a microsecond past it: still none
    1_764_921_600_000_001_000,
    1_764_921_659_999_999_999,  # the last microsecond of a minute
    946_684_799_123_456_000,  # 1999-12-31T23:59:59.123456Z
])
def test_the_clock_writes_what_structlogs_stamper_writes(monkeypatch, nanoseconds):
    clock = logs._UtcClock()
    monkeypatch.setattr(logs.time, "time_ns", lambda: nanoseconds)
    assert clock.now() == _structlogs_text(nanoseconds)


def test_the_second_is_made_anew_when_it_changes(monkeypatch):
    """Seconds apart, in either order (a clock set back), each line has its own second."""
    clock = logs._UtcClock()
    for nanoseconds in (1_764_921_600_500_000_000, 1_764_921_601_250_000_000,
                        1_764_921_601_750_000_000, 1_764_921_599_000_000_000):
        monkeypatch.setattr(logs.time, "time_ns", lambda value=nanoseconds: value)
        assert clock.now() == _structlogs_text(nanoseconds)
