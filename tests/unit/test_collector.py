"""What a closed connection held is freed soon after it closes, though it is cyclic garbage
(service/collector.py): a timer after the first close, or at once after a batch."""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest

from service import collector
from service.collector import ClosedConnections


class Held:
    """A connection's objects as asyncio and pyOpenSSL leave them: a cycle."""

    def __init__(self) -> None:
        self.itself = self


def garbage_cycle() -> weakref.ref[Held]:
    return weakref.ref(Held())


def test_a_closed_connections_cycle_is_freed_within_the_timer():
    async def scenario() -> tuple[bool, bool, int]:
        closed = ClosedConnections(after_seconds=0.05, batch=100)
        held = garbage_cycle()
        closed.closed()
        alive_before = held() is not None
        await asyncio.sleep(0.2)
        return alive_before, held() is None, closed.passes

    gc.disable()  # only the reclaimer may collect here
    try:
        assert asyncio.run(scenario()) == (True, True, 1)
    finally:
        gc.enable()


def test_a_batch_of_closes_is_freed_at_once_and_one_pass_serves_it():
    async def scenario() -> tuple[bool, int, int]:
        closed = ClosedConnections(after_seconds=60, batch=3)
        held = garbage_cycle()
        for _ in range(3):
            closed.closed()
        freed = held() is None
        closed.reclaim()  # nothing closed since: no second pass
        return freed, closed.passes, closed.pending

    gc.disable()
    try:
        assert asyncio.run(scenario()) == (True, 1, 0)
    finally:
        gc.enable()


def test_glibc_returns_free_pages_after_a_pass_at_most_once_an_interval():
    if collector.MALLOC_TRIM is None:
        pytest.skip("this C library has no malloc_trim")

    async def scenario() -> list[int]:
        closed = ClosedConnections(after_seconds=0.01, batch=1, trim_interval=0.3)
        trims = []
        closed.closed()  # a pass at once (batch of 1), then a trim at once
        await asyncio.sleep(0.05)
        trims.append(closed.trims)
        closed.closed()  # a pass within the interval: its trim waits for the interval
        await asyncio.sleep(0.05)
        trims.append(closed.trims)
        await asyncio.sleep(0.4)
        trims.append(closed.trims)
        closed.close()
        return trims

    # The passes walk only what this test makes: in a process that has run the whole suite,
    # a full pass over everything took longer than the interval on a slow host, and the
    # second trim was then due at once.
    gc.freeze()
    try:
        assert asyncio.run(scenario()) == [1, 1, 2]
    finally:
        gc.unfreeze()


def test_while_connections_keep_closing_glibc_is_asked_seldom_and_once_they_stop_soon():
    """Under steady closes (a load balancer's health checks, senders reconnecting) a trim a
    second, 10-20 ms each, was a percent or two of the worker's CPU for pages the next
    connections take again; once the closes stop, the pages go back within the interval."""
    if collector.MALLOC_TRIM is None:
        pytest.skip("this C library has no malloc_trim")

    async def scenario() -> tuple[int, int]:
        closed = ClosedConnections(after_seconds=0.01, batch=1, trim_interval=0.2,
                                   busy_trim_interval=30)
        for _ in range(20):  # a pass every 50 ms for a second
            closed.closed()
            await asyncio.sleep(0.05)
        during = closed.trims
        await asyncio.sleep(0.4)
        after = closed.trims
        closed.close()
        return during, after

    gc.freeze()  # the passes walk only what this test makes (see the test above)
    try:
        during, after = asyncio.run(scenario())
    finally:
        gc.unfreeze()
    assert during == 1  # at the first pass; then not before the busy interval (one a pass)
    assert after == 2  # the closes stopped: within the interval
