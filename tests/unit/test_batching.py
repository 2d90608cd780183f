"""The inbox's group committer, in-process: messages that arrive while a commit runs share
the next transaction, and each waiter gets its own answer."""

from __future__ import annotations

import asyncio

from service.inbox import StoreResult
from service.inbox.batching import GroupCommitter


def test_group_commit_shares_a_transaction_and_answers_each_waiter():
    batches: list[int] = []
    release = asyncio.Event()

    async def store_batch(batch):  # type: ignore[no-untyped-def]
        batches.append(len(batch))
        if len(batches) == 1:
            await release.wait()  # the first commit is slow: the others gather meanwhile
        return [StoreResult(1, 0) if message != "broken" else ValueError("disk full")
                for message in batch]

    async def scenario() -> list[object]:
        committer = GroupCommitter(store_batch)
        first = asyncio.create_task(committer.store("a"))  # type: ignore[arg-type]
        await asyncio.sleep(0)
        others = [asyncio.create_task(committer.store(m))  # type: ignore[arg-type]
                  for m in ("b", "c", "broken")]
        await asyncio.sleep(0.01)
        release.set()
        results = await asyncio.gather(first, *others, return_exceptions=True)
        await committer.close()
        return results

    results = asyncio.run(scenario())
    assert batches == [1, 3]  # a lone message at once; the three that waited, together
    assert results[:3] == [StoreResult(1, 0)] * 3
    assert isinstance(results[3], ValueError)


def test_closing_answers_every_store_still_waiting():
    """Closing (a shutdown past its drain timeout) cancelled the commit under way and left
    its waiters and those queued behind it without an answer: their requests hung until
    their own tasks were cancelled. Each learns its message was not stored (Salesforce
    retries a message that was not acknowledged)."""
    from service.inbox import InboxError

    async def store_batch(batch):  # type: ignore[no-untyped-def]
        await asyncio.Event().wait()  # a commit that does not end

    async def scenario() -> list[object]:
        committer = GroupCommitter(store_batch)
        waiting = [asyncio.create_task(committer.store(m))  # type: ignore[arg-type]
                   for m in ("under way", "queued", "queued too")]
        await asyncio.sleep(0.01)
        await committer.close()
        done, _ = await asyncio.wait(waiting, timeout=1)
        return [task.exception() if task in done else "no answer" for task in waiting]

    answers = asyncio.run(scenario())
    assert all(isinstance(answer, InboxError) for answer in answers), answers
