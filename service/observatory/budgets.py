"""How many new chains one worker records an hour, and whose.

Recording a chain spends a budget once for every started ``BUDGET_UNIT_BYTES`` of its
certificates (a real sender's chain: once), so the budgets bound the bytes any client can
add to the database as well as the rows. Two kinds of chain spend different budgets:

- ``reserved``: a chain that was accepted or carried a stored message. Those are the
  chains an operator looks for (a sender's renewed certificate), and refused chains
  cannot spend their share. Its ceiling, ``RESERVED_PER_HOUR``, is far above what senders
  need and is there only against memory and disk exhaustion (in ``request`` mode any
  client can get a message stored).
- ``refused``: a chain refused (enforced or not) or presented without proof (unproven).
  All of them together spend ``chains.max_new_per_hour``, and those from one client
  address (an IPv6 client's /64) at most a tenth of it: an address may record while it
  has spent less than its share. The table of what each address spent holds at most
  ``CLIENT_BUDGETS_KEPT`` addresses (the oldest are forgotten); the hour's budget still
  bounds them all.

Everything starts again each hour.
"""

from __future__ import annotations

import datetime as dt
from collections import OrderedDict
from typing import Literal

from service.forwarded import ClientKey, client_key, parse_address
from service.logs import get_logger

log = get_logger("omgate")

BUDGET_UNIT_BYTES = 16 * 1024
RESERVED_PER_HOUR = 10_000  # units: at most 156 MiB of certificates an hour, per worker
CLIENT_SHARE = 10  # one client address records at most 1/CLIENT_SHARE of the refused budget
CLIENT_BUDGETS_KEPT = 10_000  # client addresses whose spending this hour is remembered
WINDOW = dt.timedelta(hours=1)

Standing = Literal["reserved", "refused"]
# What kept a chain out of the registry: a budget of new chains (a client address's share,
# the hour's chains.max_new_per_hour, the reserved ceiling), or the chains held between two
# flushes. The label of omgate_chains_not_recorded_total and the chains.not_recorded field.
Budget = Literal["client", "hour", "reserved", "pending"]

_DETAILS: dict[Budget, str] = {
    "client": "a client address recorded its share of chains.max_new_per_hour refused or "
              "unproven new chains this hour; its further new chains are counted, not "
              "recorded",
    "hour": "chains.max_new_per_hour refused or unproven new chains recorded by this worker "
            "this hour; further ones are counted, not recorded",
    "reserved": "the ceiling of accepted new chains and new chains that carried a message "
                "was reached by this worker this hour; further ones are counted, not "
                "recorded",
}


def budget_weight(presented: tuple[bytes, ...]) -> int:
    """What recording this chain spends of a budget of new chains."""
    return max(1, -(-sum(map(len, presented)) // BUDGET_UNIT_BYTES))


def _client(peer: str | None) -> ClientKey | None:
    """Whose share a chain spends (None: the one share of clients without an address)."""
    address = parse_address(peer) if peer else None
    return client_key(address) if address is not None else None


class NewChainBudgets:
    """One worker's budgets of new chains for the current hour."""

    def __init__(self, max_new_per_hour: int) -> None:
        self.limit = max_new_per_hour
        self.client_share = -(-max_new_per_hour // CLIENT_SHARE)
        self._window_start = dt.datetime.now(dt.UTC)
        self._refused = 0
        self._reserved = 0
        self._by_client: OrderedDict[ClientKey | None, int] = OrderedDict()
        self._warned: set[Budget] = set()

    @property
    def clients_held(self) -> int:
        return len(self._by_client)

    def spend(self, now: dt.datetime, weight: int, standing: Standing,
              peer: str | None) -> Budget | None:
        """Spend ``weight`` for a new chain; None when it may be recorded, else the budget
        that keeps it out (logged once an hour per budget)."""
        if now - self._window_start >= WINDOW:
            self._window_start, self._refused, self._reserved = now, 0, 0
            self._by_client.clear()
            self._warned.clear()
        if standing == "reserved":
            if self._reserved + weight > RESERVED_PER_HOUR:
                return self._kept_out("reserved", RESERVED_PER_HOUR)
            self._reserved += weight
            return None
        if self._refused + weight > self.limit:
            return self._kept_out("hour", self.limit)
        client = _client(peer)
        spent = self._by_client.get(client, 0)
        if spent >= self.client_share:
            return self._kept_out("client", self.client_share)
        self._refused += weight
        self._by_client[client] = spent + weight
        self._by_client.move_to_end(client)
        if len(self._by_client) > CLIENT_BUDGETS_KEPT:
            self._by_client.popitem(last=False)
        return None

    def _kept_out(self, budget: Budget, limit: int) -> Budget:
        if budget not in self._warned:
            self._warned.add(budget)
            log.warning("chains.not_recorded", budget=budget, limit=limit,
                        detail=_DETAILS[budget])
        return budget
