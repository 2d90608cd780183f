"""Delivery downstream, in-process: the backoff, and the worker against a failing inbox and a
synchronous handler (tests/system/test_delivery_system.py delivers through `omgate serve`)."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import threading
import time
from collections.abc import Awaitable, Callable

import pytest
from delivery_cases import RECORDS, delivery_config, states_message

from service.delivery import DeliveryFailed, DeliveryWorker, backoff
from service.delivery.targets import ThreadedCalls
from service.inbox import Inbox, InboxError, IncomingMessage, StoredNotification, open_inbox
from service.soap import parse_message


def test_backoff_doubles_with_jitter_and_a_cap():
    rng = random.Random(7)
    for attempt, full in ((1, 2), (2, 4), (3, 8), (10, 60)):
        delays = [backoff(attempt, 2, 60, rng) for _ in range(200)]
        assert min(delays) >= full / 2
        assert max(delays) <= full
        assert max(delays) - min(delays) > full / 10  # jittered, not constant


def test_backoff_stays_at_its_cap_however_many_attempts_were_made():
    # delivery.max_attempts has no upper bound; attempt 2000 once raised OverflowError.
    rng = random.Random(7)
    for attempt in (1025, 2000, 10**6):
        assert 30 <= backoff(attempt, 2, 60, rng) <= 60


async def stored_inbox(folder) -> Inbox:
    inbox = await open_inbox(f"sqlite:///{folder / 'inbox.db'}")
    await inbox.store(IncomingMessage(parse_message(states_message(1)), "/salesforce/outbound",
                                      dt.datetime.now(dt.UTC)))
    return inbox


async def until(predicate: Callable[[], Awaitable[bool]], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.05)


def test_the_worker_outlives_an_inbox_that_cannot_record_a_delivery(tmp_path):
    """The result is lost, not the worker: the lease runs out and the notification goes
    again (at least once)."""
    async def scenario() -> list[str]:
        inbox = await stored_inbox(tmp_path)
        record_delivery, failures = inbox.mark_delivered, []

        async def mark_delivered(inbox_id: int, now: dt.datetime) -> None:
            if not failures:
                failures.append(inbox_id)
                raise InboxError("disk I/O error")
            await record_delivery(inbox_id, now)

        inbox.mark_delivered = mark_delivered  # type: ignore[method-assign]
        handed: list[str] = []

        async def target(notification: StoredNotification, _attempt: int) -> None:
            handed.append(notification.notification_id)

        stop = asyncio.Event()
        worker = asyncio.create_task(DeliveryWorker(inbox, target, delivery_config()).run(stop))
        try:
            await until(lambda: _pending_is_zero(inbox))
        finally:
            stop.set()
            await worker
            await inbox.close()
        return handed

    handed = asyncio.run(scenario())
    assert len(set(handed)) == len(RECORDS)
    assert len(handed) == len(RECORDS) + 1  # the one whose result was lost went twice


async def _pending_is_zero(inbox: Inbox) -> bool:
    return (await inbox.stats()).pending == 0


def test_a_synchronous_handler_never_runs_twice_at_once_for_one_record():
    release, calls = threading.Event(), []

    def slow(document: dict) -> None:
        calls.append(document["n"])
        release.wait(10)

    async def scenario() -> None:
        threaded = ThreadedCalls(slow, max_threads=2)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(threaded.call("record-a", {"n": 1}), 0.2)
        with pytest.raises(DeliveryFailed, match="has not returned"):
            await threaded.call("record-a", {"n": 2})
        other = asyncio.create_task(threaded.call("record-b", {"n": 3}))  # others go on
        await until(lambda: _called(calls, 3))
        with pytest.raises(DeliveryFailed, match="all 2 handler threads are busy"):
            await threaded.call("record-c", {"n": 5})
        release.set()
        await other
        await until(lambda: _retry_succeeds(threaded))

    asyncio.run(scenario())
    assert calls == [1, 3, 4]


async def _called(calls: list, number: int) -> bool:
    return number in calls


async def _retry_succeeds(threaded: ThreadedCalls) -> bool:
    try:
        await threaded.call("record-a", {"n": 4})
    except DeliveryFailed:
        return False
    return True


def test_a_webhook_url_httpx_cannot_read_fails_without_quoting_it():
    """httpx's InvalidURL is no HTTPError: it left the webhook, and its words (which quote
    the URL, a password's part included) became the notification's last error."""
    from types import SimpleNamespace

    from service.delivery.webhook import Webhook

    notification = SimpleNamespace(delivery_document=dict, organization_id="00D",
                                   notification_id="04l")
    webhook = Webhook("https://omgate:Wh1sper/x@hooks.example.com/in")

    async def attempt() -> str:
        try:
            await webhook(notification, 1)  # type: ignore[arg-type]
        except DeliveryFailed as failed:
            return str(failed)
        finally:
            await webhook.aclose()
        return "delivered"

    reason = asyncio.run(attempt())
    assert "cannot be read" in reason and "Wh1sper" not in reason


def test_the_worker_outlives_a_claim_that_fails_in_any_way(tmp_path):
    """A claim that raised anything but InboxError (a row it could not read, a bug) ended
    the worker's loop: the server went on acknowledging and stored notifications were never
    handed on. It is logged, and delivery goes on."""
    from structlog.testing import capture_logs

    async def scenario() -> list[str]:
        inbox = await stored_inbox(tmp_path)
        claim, failures = inbox.claim, [ValueError("unreadable row"), InboxError("locked")]

        async def failing_claim(**arguments: object) -> list[StoredNotification]:
            if failures:
                raise failures.pop(0)
            return await claim(**arguments)  # type: ignore[arg-type]

        inbox.claim = failing_claim  # type: ignore[method-assign]
        handed: list[str] = []

        async def target(notification: StoredNotification, _attempt: int) -> None:
            handed.append(notification.notification_id)

        stop = asyncio.Event()
        worker = asyncio.create_task(DeliveryWorker(
            inbox, target, delivery_config(), retry_pause=0.01).run(stop))
        try:
            await until(lambda: _pending_is_zero(inbox), timeout=10)
        finally:
            stop.set()
            await worker
            await inbox.close()
        return handed

    with capture_logs() as logs:
        handed = asyncio.run(scenario())
    assert len(set(handed)) == len(RECORDS)
    failed = [line for line in logs if line["event"] in {"delivery.worker_error",
                                                    "delivery.inbox_failed"}]
    assert [line["detail"] for line in failed] == ["ValueError: unreadable row", "locked"]


def test_a_failing_claim_waits_before_the_next_however_often_messages_arrive(tmp_path):
    """Each stored message wakes the worker; a claim that keeps failing (the database is
    gone) must not be retried at the rate messages arrive, but after a growing pause."""
    async def scenario() -> int:
        inbox = await stored_inbox(tmp_path)
        claims = 0

        async def failing_claim(**_arguments: object) -> list[StoredNotification]:
            nonlocal claims
            claims += 1
            raise InboxError("database is gone")

        inbox.claim = failing_claim  # type: ignore[method-assign]
        stop, wake = asyncio.Event(), asyncio.Event()

        async def target(_notification: StoredNotification, _attempt: int) -> None:
            raise AssertionError("nothing is claimed")

        worker = asyncio.create_task(DeliveryWorker(
            inbox, target, delivery_config(), wake=wake, retry_pause=0.2).run(stop))
        for _ in range(60):  # messages arriving for 0.6 s
            wake.set()
            await asyncio.sleep(0.01)
        stop.set()
        await asyncio.wait_for(worker, 2)  # and the pause ends at once when the server stops
        await inbox.close()
        return claims

    claims = asyncio.run(scenario())
    assert 2 <= claims <= 3  # at 0, 0.2 and 0.6 s at most: 0.2 doubling, not 60 tries
