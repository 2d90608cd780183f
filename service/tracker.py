"""The connections one worker is serving: each counted against ``server.max_connections``
as it opens, remembered while it runs so that shutdown can wait for it, and what it held
freed soon after it closes."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from service.collector import ClosedConnections
from service.connections import ConnectionLimits, OpenConnections
from service.forwarded import format_address
from service.logs import get_logger

log = get_logger("omgate")
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
UNCAPPED = sys.maxsize


@dataclass
class ConnectionTracker:
    """Remembers running connection tasks, so shutdown can wait for them, and has what
    each held freed soon after it closes."""

    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    closed: ClosedConnections = field(default_factory=ClosedConnections)

    def wrap(self, handler: Handler, connections: OpenConnections | None = None) -> Handler:
        """``handler``, for at most ``connections.limits.total`` connections at once (when
        given): the next is closed before anything is read."""
        connections = connections or OpenConnections(ConnectionLimits(UNCAPPED, UNCAPPED))

        async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                if connections.enter():
                    await self._serve(handler, reader, writer, connections)
                else:
                    connections.log_refusal("max_connections",
                                            format_address(writer.get_extra_info("peername")))
                    writer.close()
            finally:
                self.closed.closed()

        return tracked

    async def _serve(self, handler: Handler, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter, connections: OpenConnections) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        try:
            await handler(reader, writer)
        except Exception:
            log.exception("connection.failed")
            writer.close()
        finally:
            connections.leave()

    async def drain(self, timeout: float) -> None:
        if not self.tasks:
            return
        _done, pending = await asyncio.wait(set(self.tasks), timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            log.warning("server.shutdown_timeout", cancelled_connections=len(pending))
            await asyncio.gather(*pending, return_exceptions=True)
