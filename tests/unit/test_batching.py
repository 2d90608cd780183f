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
