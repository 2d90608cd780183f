"""Hand each stored notification downstream, at least once, in each record's order.

The worker claims due notifications (the inbox hands out only the oldest pending one
per record), tries each with a per-attempt timeout, and on failure schedules the next
attempt with exponential backoff and jitter; after ``max_attempts`` a notification is
dead-lettered (``omgate inbox retry`` brings it back).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
import time
from dataclasses import dataclass, field

from service.backoff import capped_doubling
from service.config import DeliveryConfig
from service.delivery.targets import ClosingTarget, Target
from service.dsn import mask_dsn
from service.inbox import Inbox, InboxError, StoredNotification
from service.logs import get_logger
from service.metrics import Metrics

log = get_logger("omgate")
POLL_SECONDS = 1.0
# After a claim failed: the pause before the next, doubling with each failure in a row up
# to the cap (a stored message wakes the worker, and must not make it hammer a failing
# database at the rate messages arrive).
CLAIM_RETRY_FIRST_SECONDS = 1.0
CLAIM_RETRY_MAX_SECONDS = 30.0


def backoff(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Seconds before the next attempt: doubling from ``base``, capped, with jitter
    (between half and all of it), so retries of many notifications spread out."""
    delay = capped_doubling(base, attempt, cap)
    return delay / 2 + rng.uniform(0, delay / 2)


@dataclass
class DeliveryWorker:
    inbox: Inbox
    target: Target
    config: DeliveryConfig
    metrics: Metrics | None = None
    wake: asyncio.Event | None = None  # set when new notifications were stored
    rng: random.Random = random.Random()  # noqa: RUF009, S311 - jitter, not secrets
    retry_pause: float = CLAIM_RETRY_FIRST_SECONDS  # after a failed claim, doubling
    _next_retry: float = field(default=float("inf"), init=False)  # soonest retry (monotonic)

    @property
    def lease_seconds(self) -> float:
        return self.config.timeout * 2 + 5

    async def run(self, stop: asyncio.Event) -> None:
        log.info("delivery.started", concurrency=self.config.concurrency,
                 max_attempts=self.config.max_attempts, handler=self.config.handler or None,
                 webhook_url=None if self.config.handler
                 else mask_dsn(self.config.webhook_url).shown or None)
        try:
            await self.inbox.prepare_delivery()
        except InboxError as error:  # claims still work, only slower
            log.error("delivery.inbox_failed", detail=str(error))
        try:
            await self._deliver_until(stop)
        finally:
            if isinstance(self.target, ClosingTarget):
                await self.target.aclose()
        log.info("delivery.stopped")

    async def _deliver_until(self, stop: asyncio.Event) -> None:
        failed_claims = 0
        while not stop.is_set():
            claimed = await self._claim()
            if claimed is None:
                failed_claims += 1
                pause = capped_doubling(self.retry_pause, failed_claims, CLAIM_RETRY_MAX_SECONDS)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), pause)
                continue
            failed_claims = 0
            if claimed:
                results = await asyncio.gather(*(self.attempt(item) for item in claimed),
                                               return_exceptions=True)
                for failure in (r for r in results if isinstance(r, Exception)):
                    log.error("delivery.worker_error", detail=_error_text(failure))
                continue
            await self._idle(stop)

    async def _claim(self) -> list[StoredNotification] | None:
        """Due notifications, or None when the claim failed (logged): whatever it raised,
        the worker goes on, or stored notifications would never be handed on."""
        try:
            return await self.inbox.claim(limit=self.config.concurrency,
                                          lease_seconds=self.lease_seconds,
                                          now=dt.datetime.now(dt.UTC))
        except InboxError as error:
            log.error("delivery.inbox_failed", detail=str(error))
        except Exception as error:  # noqa: BLE001 - a bug, or a row it could not read
            log.error("delivery.worker_error", detail=_error_text(error))
        return None

    async def _idle(self, stop: asyncio.Event) -> None:
        waiters = [asyncio.ensure_future(stop.wait())]
        if self.wake is not None:
            self.wake.clear()
            waiters.append(asyncio.ensure_future(self.wake.wait()))
        soonest = max(0.0, self._next_retry - time.monotonic())
        _done, pending = await asyncio.wait(waiters, timeout=min(POLL_SECONDS, soonest),
                                            return_when=asyncio.FIRST_COMPLETED)
        if soonest <= POLL_SECONDS:
            self._next_retry = float("inf")
        for waiter in pending:
            waiter.cancel()

    async def attempt(self, notification: StoredNotification) -> None:
        """One try; an inbox that cannot record the result leaves the claim to expire,
        and the notification is tried again when its lease runs out."""
        attempt = notification.attempts + 1
        fields = {"inbox_id": notification.id, "notification_id": notification.notification_id,
                  "record_id": notification.record_id, "attempt": attempt}
        try:
            await self._try(notification, attempt, fields)
        except InboxError as error:
            log.error("delivery.inbox_failed", detail=str(error), **fields)

    async def _try(self, notification: StoredNotification, attempt: int,
                   fields: dict[str, object]) -> None:
        try:
            await asyncio.wait_for(self.target(notification, attempt), self.config.timeout)
        except Exception as error:  # noqa: BLE001 - any failure means: try again later
            await self._failed(notification, attempt, _describe(error), fields)
            return
        await self.inbox.mark_delivered(notification.id, dt.datetime.now(dt.UTC))
        self._count("delivered")
        log.info("delivery.delivered", **fields)

    async def _failed(self, notification: StoredNotification, attempt: int, reason: str,
                      fields: dict[str, object]) -> None:
        now = dt.datetime.now(dt.UTC)
        if attempt >= self.config.max_attempts:
            await self.inbox.mark_failed(notification.id, reason, retry_at=None, now=now)
            self._count("dead")
            log.error("delivery.dead_letter", reason=reason, **fields)
            return
        delay = backoff(attempt, self.config.retry_base_seconds, self.config.retry_max_seconds,
                        self.rng)
        await self.inbox.mark_failed(notification.id, reason,
                                     retry_at=now + dt.timedelta(seconds=delay), now=now)
        self._next_retry = min(self._next_retry, time.monotonic() + delay)
        self._count("failed")
        log.warning("delivery.failed", reason=reason, retry_in_seconds=round(delay, 1),
                    **fields)

    def _count(self, result: str) -> None:
        if self.metrics is not None:
            self.metrics.delivery_attempts.labels(result).inc()


def _error_text(error: BaseException) -> str:
    """An unexpected error, for ``delivery.worker_error``: its type and its words."""
    return f"{type(error).__name__}: {error}"


def _describe(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "timed out"
    return str(error) or type(error).__name__
