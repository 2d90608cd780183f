"""Group commit: concurrent stores collected into shared transactions, one durable commit
(one fsync) for many messages."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from service.inbox.model import InboxError, StoreResult

GROUP_COMMIT_LIMIT = 256  # messages in one transaction at the most

Prepared = TypeVar("Prepared")
BatchStore = Callable[[Sequence[Prepared]], Awaitable[list[StoreResult | Exception]]]


class GroupCommitter(Generic[Prepared]):
    """Collects concurrent stores into shared transactions, on the event loop.

    While one batch commits, newly arriving messages wait together; they form the next
    batch. Nobody waits for a timer, so a lone message is committed at once.
    """

    def __init__(self, store_batch: BatchStore[Prepared],
                 limit: int = GROUP_COMMIT_LIMIT) -> None:
        if limit < 1:
            raise ValueError(f"a batch holds at least one message, not {limit}")
        self._store_batch = store_batch
        self._limit = limit
        # the stores waiting for the next batch (a deque and a wake-up rather than an
        # asyncio.Queue: its locking and bookkeeping cost every message a few µs, for a
        # single reader that needs none of it)
        self._queued: deque[tuple[Prepared, asyncio.Future[StoreResult]]] = deque()
        self._wake_up: asyncio.Future[None] | None = None  # the runner waits for a store
        self._task: asyncio.Task[None] | None = None
        self._committing: list[asyncio.Future[StoreResult]] = []  # the batch under way

    async def store(self, message: Prepared) -> StoreResult:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        future: asyncio.Future[StoreResult] = asyncio.get_running_loop().create_future()
        self._queued.append((message, future))
        if self._wake_up is not None and not self._wake_up.done():
            self._wake_up.set_result(None)
        return await future

    async def _next_batch(self) -> list[tuple[Prepared, asyncio.Future[StoreResult]]]:
        while not self._queued:
            self._wake_up = asyncio.get_running_loop().create_future()
            await self._wake_up
        queued = self._queued
        return [queued.popleft() for _ in range(min(self._limit, len(queued)))]

    async def _run(self) -> None:
        while True:
            batch = await self._next_batch()
            self._committing = [future for _, future in batch]
            try:
                results = await self._store_batch([message for message, _ in batch])
            except Exception as error:  # noqa: BLE001 - every waiter learns of the failure
                results = [error] * len(batch)
            finally:
                self._committing = []
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    async def close(self) -> None:
        """Stop committing; every store still waiting (its commit cut short, or queued)
        learns its message was not stored."""
        waiting = list(self._committing)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        waiting.extend(future for _, future in self._queued)
        self._queued.clear()
        for future in waiting:
            if not future.done():
                future.set_exception(InboxError("the inbox closed before the message was "
                                                "stored"))

