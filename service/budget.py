"""The memory request bodies may hold at once, counted as their bytes arrive.

Rules, for every chunk of a body:

- all bodies together hold at most ``server.max_buffered_bytes``;
- the bodies of one client address together hold at most
  ``server.max_buffered_bytes_per_client``;
- a body past its first ``SMALL_BODY_BYTES`` grows only while everything held stays
  below the budget less its reserved quarter, so a small message always finds room
  however many large or slow bodies are under way.

Before its first byte a body waits, holding nothing, until what is held leaves room for
all it declared (Content-Length): a burst of large bodies then goes in turn instead of
all starting and all getting stuck. The declared size reserves nothing, so bodies that
declare much and trickle bytes keep nobody out.

A chunk that does not fit waits for room, up to ``wait`` seconds, then the request is
refused with a Server fault (HTTP 503), which Salesforce retries. Bodies that wait hold
what they have read; when every body holding bytes is waiting, none would ever free any,
so the youngest is refused at once and the older ones go on.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field

from service.soap import SoapFaultError

SMALL_BODY_BYTES = 256 * 1024
RESERVED_SHARE = 4  # 1/RESERVED_SHARE of the budget is kept for the first bytes of bodies


@dataclass(frozen=True)
class BudgetRules:
    limit: int  # bytes held by all bodies together
    per_client: int  # bytes held by the bodies of one client address

    @property
    def reserved(self) -> int:
        """Bytes that only bodies still within their first SMALL_BODY_BYTES may use."""
        return self.limit // RESERVED_SHARE

    @property
    def largest_body(self) -> int:
        """The largest body that can ever be held whole."""
        return min(self.per_client, self.limit - self.reserved)


def _server_busy() -> SoapFaultError:
    return SoapFaultError("server_busy", "Too many large messages at once; please retry.",
                          status=503, fault_code="Server")


@dataclass(eq=False)
class BodyHold:
    """One request body's share of the budget; ``take`` each chunk as it arrives."""

    budget: BodyBudget = field(repr=False)
    client: str
    order: int  # lower: the request came first
    declared: int  # what the request says the body holds: a hint, bytes count as they come
    held: int = 0
    refused: bool = False

    async def take(self, size: int) -> None:
        await self.budget.take(self, size)

    async def __aenter__(self) -> BodyHold:
        return self

    async def __aexit__(self, *_exception: object) -> None:
        self.budget.give_back(self)


class BodyBudget:
    def __init__(self, rules: BudgetRules, wait: float) -> None:
        self.rules = rules
        self.wait = wait
        self.used = 0
        self._by_client: dict[str, int] = {}
        self._holding = 0  # holds with bytes
        self._waiting: set[BodyHold] = set()  # holds with bytes, waiting for room
        self._orders = itertools.count()
        # resolved at the next change, when a body waits for room. Not an asyncio.Condition:
        # its lock guarded nothing (every check and count runs between two awaits), and in
        # Python 3.11 a request cancelled twice while it waited left that lock taken for
        # good, and every body after it waiting for it without a deadline.
        self._change: asyncio.Future[None] | None = None
        self._sleepers = 0  # bodies waiting for a change

    def held_by(self, client: str) -> int:
        return self._by_client.get(client, 0)

    def hold(self, client: str, declared: int) -> BodyHold:
        """A share for one body from ``client`` that says it has ``declared`` bytes (only
        a hint: bytes count as they arrive), to use in ``async with``: what it took is
        given back on exit. (A class rather than a generator: this runs for every
        message.)"""
        return BodyHold(self, client, next(self._orders), declared)

    def give_back(self, share: BodyHold) -> None:
        if self._give_back(share):
            self._notify()

    def _quiet(self) -> bool:
        """Nobody waits for room: a body that fits goes ahead at once (the usual case: one
        message at a time fits at once)."""
        return not self._sleepers

    def _notify(self) -> None:
        """Wake every body waiting for room, to look again."""
        change, self._change = self._change, None
        if change is not None and not change.done():
            change.set_result(None)

    def fits(self, share: BodyHold, size: int) -> bool:
        if self.held_by(share.client) + size > self.rules.per_client:
            return False
        small = share.held + size <= SMALL_BODY_BYTES
        ceiling = self.rules.limit if small else self.rules.limit - self.rules.reserved
        return self.used + size <= ceiling

    async def take(self, share: BodyHold, size: int) -> None:
        if (self._quiet() and (share.held or self.fits(share, share.declared))
                and self.fits(share, size)):
            self._count(share, size)
            return
        deadline = asyncio.get_running_loop().time() + self.wait
        if not share.held:
            await self._wait_for_room_for_all_of_it(share, deadline)
        if not self.fits(share, size):
            await self._wait_for_room(share, size, deadline)
        self._count(share, size)  # (fits was checked since the last await)

    def _count(self, share: BodyHold, size: int) -> None:
        if not share.held:
            self._holding += 1
        share.held += size
        self.used += size
        self._by_client[share.client] = self.held_by(share.client) + size

    async def _wait_for_room_for_all_of_it(self, share: BodyHold, deadline: float) -> None:
        """Before its first byte, a body waits, holding nothing, until what is held now
        leaves room for all it declared; bodies that started together and then all wait
        for room would only be refused. A body that declares much and sends little
        holds little: only arrived bytes are held."""
        while not self.fits(share, share.declared):
            await self._wait_until(deadline)

    async def _wait_for_room(self, share: BodyHold, size: int, deadline: float) -> None:
        if share.held:
            self._waiting.add(share)
        try:
            while not self.fits(share, size):
                self._refuse_youngest_if_stuck(share)
                if share.refused:
                    raise _server_busy()
                await self._wait_until(deadline)
        finally:
            self._waiting.discard(share)
        if share.refused:  # room came just after it was chosen: it gives way all the same
            raise _server_busy()

    async def _wait_until(self, deadline: float) -> None:
        """Wait for a change; refused as busy once ``deadline`` has passed."""
        loop = asyncio.get_running_loop()
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise _server_busy()
        if self._change is None:
            self._change = loop.create_future()
        self._sleepers += 1
        try:
            # asyncio.wait: this body's cancel leaves the change to the others waiting
            await asyncio.wait((self._change,), timeout=remaining)
        finally:
            self._sleepers -= 1

    def _refuse_youngest_if_stuck(self, share: BodyHold) -> None:
        """When every hold with bytes waits for room, none will give any back: refuse the
        youngest (``share`` itself when nobody holds anything: it can never fit)."""
        if len(self._waiting) < self._holding:
            return  # a body holding bytes is still arriving, or being parsed or stored
        victim = max(self._waiting, key=lambda waiting: waiting.order, default=share)
        victim.refused = True
        self._waiting.discard(victim)
        self._notify()

    def _give_back(self, share: BodyHold) -> bool:
        """Whether ``share`` held anything, now given back."""
        if not share.held:
            return False
        self.used -= share.held
        left = self.held_by(share.client) - share.held
        if left:
            self._by_client[share.client] = left
        else:
            del self._by_client[share.client]
        self._holding -= 1
        share.held = 0
        return True
