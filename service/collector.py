"""How omgate uses Python's garbage collector: settled after startup, and made to give back
what closed connections held soon after they close.

A closed connection's objects (its socket and asyncio transport, OpenSSL's SSL object with
the client's chain, about 40 KiB, the HTTP state and the tasks that served it) refer to
one another in cycles that asyncio, hypercorn and pyOpenSSL build, so reference counting
alone never frees them: only a full pass of the cyclic collector does. With the collector
settled (young passes rarer, startup's objects frozen), a full pass came only after about
a million allocations: a server whose clients reconnect without sending much (a load
balancer's TLS health checks, a sender retrying) kept every closed connection until then,
and its memory grew by rounds of connections without a plateau (issue 26).

So every closed connection is counted: the first close starts a timer, and one full pass
runs when it fires (half a second later) or at once after ``batch`` closes, whichever
comes first. A full pass walks only the objects alive and not frozen: a few milliseconds
with hundreds of connections open. Once passes stop for ``trim_interval`` seconds, and
every ``busy_trim_interval`` while they go on, glibc is asked to return its free pages
(``malloc_trim``, 10-20 ms; skipped where the C library has none, as musl): without it,
what 500 closed connections freed stayed resident in fragments, and each round of 500 new
ones peaked higher than the last.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from service.logs import get_logger

log = get_logger("omgate.collector")

GC_YOUNG_THRESHOLD = 10_000  # allocations between young collections (CPython's default: 700)
RECLAIM_AFTER_SECONDS = 0.5  # the longest a closed connection waits to be freed
RECLAIM_BATCH = 256  # closes that trigger a full pass at once (bounds memory under churn)
# glibc is asked to return its free pages once passes have stopped for this long (the
# closes quieted down), and while connections keep closing, once this long after it last
# was: the pages freed meanwhile are taken again by the connections that open.
TRIM_INTERVAL_SECONDS = 1.0
BUSY_TRIM_INTERVAL_SECONDS = 10.0


def _libc_malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, where the C library has it (musl and others do not)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError, TypeError):
        return None
    return trim


MALLOC_TRIM = _libc_malloc_trim()


def settle_garbage_collector() -> None:
    """What startup built stays for the process's life: freezing it keeps the collector's
    full passes from walking it again and again (pauses that showed in the p99), and the
    young generation is collected less often (a request allocates hundreds of objects)."""
    gc.freeze()
    _young, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


@dataclass
class ClosedConnections:
    """Counts closed connections and frees what they held with one full collector pass,
    ``after_seconds`` after the first of them closed, or at once after ``batch``; glibc
    returns its free pages ``trim_interval`` after the passes stop, and every
    ``busy_trim_interval`` while they go on."""

    after_seconds: float = RECLAIM_AFTER_SECONDS
    batch: int = RECLAIM_BATCH
    trim_interval: float = TRIM_INTERVAL_SECONDS
    busy_trim_interval: float = BUSY_TRIM_INTERVAL_SECONDS
    pending: int = 0  # closed since the last pass
    passes: int = 0
    trims: int = 0
    _trimmed_at: float = -BUSY_TRIM_INTERVAL_SECONDS  # time.monotonic()
    _passed_at: float = 0.0  # time.monotonic() of the last pass
    _timer: asyncio.TimerHandle | None = field(default=None, repr=False)
    _trim_timer: asyncio.TimerHandle | None = field(default=None, repr=False)

    def closed(self) -> None:
        """One connection closed (called on the event loop's thread)."""
        self.pending += 1
        if self.pending >= self.batch:
            self.reclaim()
        elif self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.after_seconds, self.reclaim)

    def reclaim(self) -> None:
        """The full pass, now; nothing to do when no connection closed since the last."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.pending == 0:
            return
        closed, self.pending = self.pending, 0
        started = time.perf_counter()
        freed = gc.collect()
        self.passes += 1
        log.debug("collector.reclaimed", closed_connections=closed, objects=freed,
                  pass_ms=round((time.perf_counter() - started) * 1000, 2))
        self._owe_trim()

    def _owe_trim(self) -> None:
        self._passed_at = time.monotonic()
        if MALLOC_TRIM is None or self._trim_timer is not None:
            return  # none to ask, or asked for already
        self._trim_timer = asyncio.get_running_loop().call_later(self._trim_wait(), self._trim)

    def _trim_wait(self) -> float:
        """Seconds until glibc is asked: ``trim_interval`` after the last pass, or
        ``busy_trim_interval`` after the last trim (a trim costs 10-20 ms, and under steady
        closes one a second was a percent or two of the worker's CPU)."""
        due = min(self._passed_at + self.trim_interval,
                  self._trimmed_at + self.busy_trim_interval)
        return max(0.0, due - time.monotonic())

    def _trim(self) -> None:
        self._trim_timer = None
        if (wait := self._trim_wait()) > 0:  # passes went on since it was set: later
            self._trim_timer = asyncio.get_running_loop().call_later(wait, self._trim)
            return
        if MALLOC_TRIM is not None:
            MALLOC_TRIM(0)
        self._trimmed_at = time.monotonic()
        self.trims += 1

    def close(self) -> None:
        """Stop the timers (the server is stopping)."""
        for timer in (self._timer, self._trim_timer):
            if timer is not None:
                timer.cancel()
        self._timer = self._trim_timer = None
