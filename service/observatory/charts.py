"""Decisions over time as a picture: per endpoint, one stacked bar per hour (the last 24
hours) or per day (the last 30 days), one colour per outcome.

This module lays the chart out (bars, scale, ticks) from the registry's hourly counts;
``service/console/templates/decisions.svg`` draws it as SVG, server-side.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

from service.inbox.chains import CHAIN_OUTCOMES, LISTENER, ChainOutcome, HourCount

Window = Literal["24h", "30d"]
WINDOWS: tuple[Window, ...] = get_args(Window)
# Small enough to stay legible when a phone shrinks it to its width (the page scales it).
WIDTH, HEIGHT = 480, 164
PLOT_LEFT, PLOT_RIGHT, PLOT_TOP, PLOT_BOTTOM = 34, 460, 10, 140
LISTENER_NAME = "the listener (per connection)"


@dataclass(frozen=True)
class Buckets:
    """The columns of a window: ``count`` buckets of ``size``, the last one holding now."""

    size: dt.timedelta
    count: int
    label_every: int  # a label under every n-th column
    label_format: str
    title_format: str

    def starts(self, now: dt.datetime) -> list[dt.datetime]:
        current = now.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)
        if self.size >= dt.timedelta(days=1):
            current = current.replace(hour=0)
        return [current - self.size * back for back in range(self.count - 1, -1, -1)]

    def first(self, now: dt.datetime) -> dt.datetime:
        return self.starts(now)[0]


BUCKETS: dict[Window, Buckets] = {
    "24h": Buckets(dt.timedelta(hours=1), 24, 6, "%H:00", "%Y-%m-%d %H:00 UTC, one hour"),
    "30d": Buckets(dt.timedelta(days=1), 30, 7, "%m-%d", "%Y-%m-%d UTC, one day"),
}


@dataclass(frozen=True)
class Segment:
    outcome: ChainOutcome
    y: float
    height: float
    count: int


@dataclass(frozen=True)
class Column:
    x: float
    width: float
    start: dt.datetime
    title: str  # its tooltip: when, and the count of each outcome
    counts: tuple[tuple[ChainOutcome, int], ...]
    segments: tuple[Segment, ...]  # the outcomes it has, stacked from the bottom


@dataclass(frozen=True)
class Tick:
    position: float
    label: str


@dataclass(frozen=True)
class DecisionChart:
    endpoint: str  # LISTENER for the listener's per-connection decisions
    name: str
    window: Window
    columns: tuple[Column, ...]
    y_ticks: tuple[Tick, ...]
    x_ticks: tuple[Tick, ...]
    totals: tuple[tuple[ChainOutcome, int], ...]
    width: int = WIDTH
    height: int = HEIGHT
    left: int = PLOT_LEFT
    right: int = PLOT_RIGHT
    top: int = PLOT_TOP
    bottom: int = PLOT_BOTTOM

    @property
    def total(self) -> int:
        return sum(count for _, count in self.totals)

    @property
    def caption(self) -> str:
        counts = ", ".join(f"{count} {outcome}" for outcome, count in self.totals)
        return f"Decisions on {self.name}, the last {self.window}: {counts}."


def scale_top(largest: int) -> int:
    """The top of the scale: 1, 2 or 5 times a power of ten, at least ``largest``."""
    if largest <= 1:
        return 1
    power = int(10 ** math.floor(math.log10(largest)))
    return next(step * power for step in (1, 2, 5, 10) if step * power >= largest)


def _column(start: dt.datetime, index: int, buckets: Buckets, counts: Counter[ChainOutcome],
            top: int) -> Column:
    slot = (PLOT_RIGHT - PLOT_LEFT) / buckets.count
    per_unit = (PLOT_BOTTOM - PLOT_TOP) / top
    segments, bottom = [], float(PLOT_BOTTOM)
    for outcome in CHAIN_OUTCOMES:
        if counts[outcome]:
            height = counts[outcome] * per_unit
            bottom -= height
            segments.append(Segment(outcome, bottom, height, counts[outcome]))
    listed = tuple((outcome, counts[outcome]) for outcome in CHAIN_OUTCOMES)
    title = start.strftime(buckets.title_format) + ": " + ", ".join(
        f"{count} {outcome}" for outcome, count in listed)
    return Column(PLOT_LEFT + slot * index + slot * 0.1, slot * 0.8, start, title, listed,
                  tuple(segments))


def decision_chart(hours: Iterable[HourCount], endpoint: str, name: str, window: Window,
                   now: dt.datetime) -> DecisionChart:
    """The chart of one endpoint's decisions (``hours``: the registry's counts, any
    endpoint; those before the window or of another endpoint are left out)."""
    buckets = BUCKETS[window]
    starts = buckets.starts(now)
    per_bucket: dict[dt.datetime, Counter[ChainOutcome]] = {start: Counter() for start in starts}
    for count in hours:
        if count.endpoint != endpoint or count.hour < starts[0]:
            continue
        index = min(int((count.hour - starts[0]) / buckets.size), buckets.count - 1)
        per_bucket[starts[index]][count.outcome] += count.connections
    top = scale_top(max((sum(counter.values()) for counter in per_bucket.values()), default=0))
    columns = tuple(_column(start, index, buckets, per_bucket[start], top)
                    for index, start in enumerate(starts))
    per_unit = (PLOT_BOTTOM - PLOT_TOP) / top
    halves = {top // 2} if top % 2 == 0 else set()
    y_ticks = tuple(Tick(PLOT_BOTTOM - value * per_unit, str(value))
                    for value in sorted({0, top, *halves}))
    x_ticks = tuple(Tick(column.x + column.width / 2,
                         column.start.strftime(buckets.label_format))
                    for index, column in enumerate(columns)
                    if (buckets.count - 1 - index) % buckets.label_every == 0)
    totals = Counter[ChainOutcome]()
    for counter in per_bucket.values():
        totals.update(counter)
    return DecisionChart(endpoint, name, window, columns, y_ticks, x_ticks,
                         tuple((outcome, totals[outcome]) for outcome in CHAIN_OUTCOMES))


def decision_charts(hours: Sequence[HourCount], configured: Sequence[str], window: Window,
                    now: dt.datetime) -> list[DecisionChart]:
    """One chart per endpoint with decisions in the window (the listener's first, then the
    configured endpoints in order); the listener's alone, empty, when there are none."""
    first = BUCKETS[window].first(now)
    seen = {count.endpoint for count in hours if count.hour >= first}
    order = [LISTENER, *configured, *sorted(seen - {LISTENER, *configured})]
    shown = [endpoint for endpoint in order if endpoint in seen] or [LISTENER]
    return [decision_chart(hours, endpoint, endpoint or LISTENER_NAME, window, now)
            for endpoint in shown]
