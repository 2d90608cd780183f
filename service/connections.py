"""Caps on open connections: in all, and per client address.

Every connection holds a descriptor and memory, and anyone who can reach a listener can
open connections. ``server.max_connections`` bounds them in each worker process, and
``server.max_connections_per_peer`` bounds what one client holds, so that no peer can
take them all. The client is the real one: the address a trusted proxy's PROXY header
names, or, for a request a trusted proxy forwards over HTTP, the address it forwards
(each such request counts as one connection of that client). A trusted proxy's own
connections count only towards the total: it carries many clients. IPv6 clients are
counted per /64 network, what one host is usually given.
"""

from __future__ import annotations

import asyncio
import resource
import time
from collections import Counter
from dataclasses import dataclass
from typing import Literal

from service.forwarded import Address, ClientKey, Network, client_key, parse_address, within
from service.forwarded.origin import ConnectionOrigin
from service.listeners.proxy_header import OriginReader
from service.logs import get_logger
from service.metrics import Metrics

log = get_logger("omgate")

RefusalReason = Literal["max_connections", "max_connections_per_peer"]
REFUSALS_LOGGED_EVERY = 1.0  # seconds: a flood of refusals is one line a second, with a count
# Descriptors kept for what is not a client connection: listeners, the inbox, log files,
# delivery connections.
DESCRIPTOR_RESERVE = 128


@dataclass(frozen=True)
class ConnectionLimits:
    total: int
    per_client: int
    uncapped: tuple[Network, ...] = ()  # the trusted proxies


class OpenConnections:
    """Counts the open connections of one listener group and says when one is too many."""

    def __init__(self, limits: ConnectionLimits, metrics: Metrics | None = None) -> None:
        self.limits = limits
        self.metrics = metrics
        self.open = 0
        self._per_client: Counter[ClientKey] = Counter()
        self._last_logged: dict[RefusalReason, float] = {}
        self._unlogged: Counter[RefusalReason] = Counter()

    def _key(self, address: Address | None) -> ClientKey | None:
        """None for what is not capped per client: no address, or a trusted proxy's."""
        if address is None or within(address, self.limits.uncapped):
            return None
        return client_key(address)

    def _refuse(self, reason: RefusalReason) -> bool:
        if self.metrics is not None:
            self.metrics.connections_refused.labels(reason).inc()
        return False

    def enter(self) -> bool:
        """Count a new connection; False when ``limits.total`` are open already."""
        if self.open >= self.limits.total:
            return self._refuse("max_connections")
        self.open += 1
        return True

    def leave(self) -> None:
        self.open -= 1

    def claim(self, address: Address | None) -> bool:
        """Count one more connection of ``address``'s client; False when it holds
        ``limits.per_client`` already."""
        key = self._key(address)
        if key is None:
            return True
        if self._per_client[key] >= self.limits.per_client:
            return self._refuse("max_connections_per_peer")
        self._per_client[key] += 1
        return True

    def release(self, address: Address | None) -> None:
        key = self._key(address)
        if key is None:
            return
        self._per_client[key] -= 1
        if self._per_client[key] <= 0:
            del self._per_client[key]

    def log_refusal(self, reason: RefusalReason, peer: str | None) -> None:
        """``connection.refused``, at most once a second per reason, with the number of
        connections refused since the last line."""
        self._unlogged[reason] += 1
        now = time.monotonic()
        last = self._last_logged.get(reason)
        if last is not None and now - last < REFUSALS_LOGGED_EVERY:
            return
        self._last_logged[reason] = now
        limit = self.limits.total if reason == "max_connections" else self.limits.per_client
        log.warning("connection.refused", reason=reason, peer=peer, limit=limit,
                    refused=self._unlogged.pop(reason))


def capped(read_origin: OriginReader, connections: OpenConnections) -> OriginReader:
    """``read_origin``, then a refusal (None) when the client it names already holds
    server.max_connections_per_peer connections; its claim ends with the connection."""
    async def read(reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                   ) -> ConnectionOrigin | None:
        origin = await read_origin(reader, writer)
        if origin is None:
            return None
        client = origin.client or origin.peer
        address = parse_address(client[0]) if client else None
        if not connections.claim(address):
            connections.log_refusal("max_connections_per_peer", origin.label())
            return None
        task = asyncio.current_task()
        if task is not None:
            task.add_done_callback(lambda _task: connections.release(address))
        return origin

    return read


def descriptor_room(connections: int) -> int:
    """How many of ``connections`` the open-files limit leaves room for, the reserve kept
    (the supervisor has raised the soft limit as far as the hard one allows). Beyond the
    limit accepting would fail for everyone, where a cap refuses only the one too many."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return connections
    return max(1, min(connections, soft - DESCRIPTOR_RESERVE))
