"""The body budget's rules: bytes count as they arrive, one client address is capped, a
reserved share keeps room for small bodies, and bodies that all wait do not deadlock."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from service.budget import SMALL_BODY_BYTES, BodyBudget, BudgetRules
from service.soap import SoapFaultError

MIB = 1024 * 1024
RULES = BudgetRules(limit=4 * MIB, per_client=2 * MIB)  # 1 MiB reserved


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 30))


async def refused_after(budget: BodyBudget, client: str, declared: int, *sizes: int) -> float:
    """Seconds until the body of ``sizes`` (taken in turn) is refused as server_busy."""
    started = time.monotonic()
    async with budget.hold(client, declared) as share:
        for size in sizes[:-1]:
            await share.take(size)
        with pytest.raises(SoapFaultError) as refusal:
            await share.take(sizes[-1])
    assert refusal.value.reason == "server_busy"
    assert refusal.value.status == 503
    return time.monotonic() - started


def test_the_largest_body_fits_the_client_cap_and_the_unreserved_part():
    assert RULES.reserved == 1 * MIB
    assert RULES.largest_body == 2 * MIB
    assert BudgetRules(limit=4 * MIB, per_client=16 * MIB).largest_body == 3 * MIB


def test_bodies_hold_only_the_bytes_that_arrived():
    async def scenario() -> int:
        budget = BodyBudget(RULES, wait=5)
        async with contextlib.AsyncExitStack() as stack:
            for index in range(500):  # declared sizes do not matter: nothing is reserved
                share = await stack.enter_async_context(budget.hold(f"10.0.0.{index % 3}", MIB))
                await share.take(1)
            async with budget.hold("10.0.0.1", 200 * 1024) as small:
                await small.take(200 * 1024)
                used = budget.used
        assert budget.used == 0
        return used

    assert run(scenario()) == 500 + 200 * 1024


def test_one_client_address_holds_at_most_its_cap_and_others_still_find_room():
    async def scenario() -> tuple[float, int]:
        budget = BodyBudget(RULES, wait=0.3)
        async with budget.hold("192.0.2.1", MIB) as first, \
                budget.hold("192.0.2.1", MIB) as second:
            await first.take(MIB)
            await second.take(MIB)
            waited = await refused_after(budget, "192.0.2.1", 1, 1)
            async with budget.hold("192.0.2.2", MIB) as other:
                await other.take(MIB)
                return waited, budget.held_by("192.0.2.1")

    waited, held = run(scenario())
    assert 0.25 < waited < 2
    assert held == 2 * MIB


def test_the_reserved_share_is_kept_for_small_bodies():
    async def scenario() -> float:
        budget = BodyBudget(RULES, wait=0.3)
        async with budget.hold("192.0.2.1", MIB + MIB // 2) as first, \
                budget.hold("192.0.2.2", MIB + MIB // 2) as second:
            await first.take(MIB + MIB // 2)
            await second.take(MIB + MIB // 2)  # the unreserved 3 MiB are taken
            # a third body, said to be small, grows through its first bytes, then no further
            waited = await refused_after(budget, "192.0.2.3", SMALL_BODY_BYTES,
                                         SMALL_BODY_BYTES, 1)
            async with contextlib.AsyncExitStack() as stack:  # small ones fit, all at once
                for client in ("192.0.2.4", "192.0.2.5", "192.0.2.6"):
                    small = await stack.enter_async_context(budget.hold(client, SMALL_BODY_BYTES))
                    await small.take(SMALL_BODY_BYTES)
            return waited

    assert 0.25 < run(scenario()) < 2


def test_a_waiting_body_goes_on_when_room_is_given_back():
    async def scenario() -> float:
        budget = BodyBudget(RULES, wait=10)
        release = asyncio.Event()

        async def holder() -> None:
            async with budget.hold("192.0.2.1", 2 * MIB) as share:
                await share.take(2 * MIB)
                await release.wait()

        task = asyncio.create_task(holder())
        await asyncio.sleep(0.05)
        started = time.monotonic()
        asyncio.get_running_loop().call_later(0.2, release.set)
        async with budget.hold("192.0.2.1", MIB) as share:
            await share.take(MIB)
        await task
        return time.monotonic() - started

    assert 0.15 < run(scenario()) < 2


def test_bodies_that_all_wait_for_each_other_do_not_deadlock():
    async def scenario() -> tuple[float, str]:
        budget = BodyBudget(RULES, wait=10)
        both_hold = asyncio.Barrier(2)

        async def body(client: str, first: int) -> str:
            async with budget.hold(client, first) as share:  # each says it is smaller
                await share.take(first)
                await both_hold.wait()
                try:
                    await share.take(MIB // 2)
                except SoapFaultError as error:
                    return error.reason
                return "read"

        started = time.monotonic()
        older = asyncio.create_task(body("192.0.2.1", MIB + MIB // 2))
        await asyncio.sleep(0)  # the older body takes its share first
        younger = asyncio.create_task(body("192.0.2.2", MIB + MIB // 2))
        results = await asyncio.gather(older, younger)
        return time.monotonic() - started, " ".join(results)

    took, results = run(scenario())
    assert results == "read server_busy"  # the younger gives way, at once
    assert took < 2


def test_a_chunk_that_can_never_fit_is_refused_at_once():
    async def scenario() -> float:
        return await refused_after(BodyBudget(RULES, wait=10), "192.0.2.1", 1, 2 * MIB + 1)

    assert run(scenario()) < 1


def test_a_body_starts_when_what_is_held_leaves_room_for_all_it_declared():
    async def scenario() -> tuple[int, float]:
        budget = BodyBudget(RULES, wait=10)
        give_back = asyncio.Event()

        async def holder(client: str) -> None:
            async with budget.hold(client, MIB + MIB // 2) as share:
                await share.take(MIB + MIB // 2)
                await give_back.wait()

        holders = [asyncio.create_task(holder(client)) for client in ("192.0.2.1", "192.0.2.2")]
        await asyncio.sleep(0.05)  # the unreserved 3 MiB are held
        async with budget.hold("192.0.2.3", MIB) as large:
            starting = asyncio.create_task(large.take(1))
            await asyncio.sleep(0.1)
            held_before_room = large.held
            async with budget.hold("192.0.2.4", 1000) as small:  # a small one goes in
                await small.take(1000)
            started = time.monotonic()
            asyncio.get_running_loop().call_later(0.2, give_back.set)
            await starting
            started_after = time.monotonic() - started
        await asyncio.gather(*holders)
        return held_before_room, started_after

    held_before_room, started_after = run(scenario())
    assert held_before_room == 0
    assert 0.15 < started_after < 2


def test_bodies_that_declare_much_and_send_little_do_not_keep_others_out():
    async def scenario() -> int:
        budget = BodyBudget(RULES, wait=0.5)
        async with contextlib.AsyncExitStack() as stack:
            for _ in range(50):
                slow = await stack.enter_async_context(budget.hold("192.0.2.1", MIB))
                await slow.take(1)
            async with budget.hold("192.0.2.1", 10_000) as small, \
                    budget.hold("192.0.2.2", 2 * MIB) as large:
                await small.take(10_000)
                await large.take(2 * MIB)
                return budget.used

    assert run(scenario()) == 50 + 10_000 + 2 * MIB


@pytest.mark.parametrize("turns_between", [0, 1, 2])
def test_requests_cancelled_twice_while_waiting_for_room_leave_nothing_behind(turns_between):
    """A request's task cancelled twice (its client gone, then the server stopping) while
    its body waited for room: with asyncio.Condition's lock in Python 3.11 the lock stayed
    taken, one task never ended, and every body after it waited on the lock for good."""
    async def scenario() -> None:
        budget = BodyBudget(RULES, wait=10)
        stay = asyncio.Event()

        async def body(client: str) -> None:
            async with budget.hold(client, 2 * MIB) as share:
                await share.take(MIB)
                await share.take(MIB)
                await stay.wait()

        tasks = [asyncio.create_task(body(f"10.0.0.{index}")) for index in range(3)]
        await asyncio.sleep(0.1)  # one holds 2 MiB, two wait for room
        for task in tasks:
            task.cancel()
        for _ in range(turns_between):
            await asyncio.sleep(0)
        for task in tasks:
            task.cancel()
        _done, pending = await asyncio.wait(tasks, timeout=2)
        assert not pending, "a request never ended"
        assert (budget.used, budget.held_by("10.0.0.0")) == (0, 0)
        later = asyncio.create_task(body("10.0.0.9"))
        await asyncio.sleep(0.1)
        assert budget.used == 2 * MIB  # a new body goes in at once
        later.cancel()
        await asyncio.gather(later, return_exceptions=True)

    run(scenario())
