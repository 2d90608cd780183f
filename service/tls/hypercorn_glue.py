"""Everything omgate uses of hypercorn's internals, in one small module.

hypercorn's ``TCPServer`` serves one connection from a reader and a writer;
omgate hands it either plain asyncio streams or a :class:`TlsStream`. The
pinned hypercorn range in pyproject.toml and tests/test_hypercorn_glue.py guard
this coupling.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import hypercorn.protocol
from hypercorn.app_wrappers import ASGIWrapper
from hypercorn.asyncio.tcp_server import TCPServer
from hypercorn.asyncio.worker_context import WorkerContext
from hypercorn.config import Config as HypercornConfig
from hypercorn.protocol.h11 import H11Protocol

from service.logs import get_logger

log = get_logger("omgate")

KEEP_ALIVE_SECONDS = 15
MAX_HEADER_BYTES = 64 * 1024


def hypercorn_config(*, read_timeout: float, graceful_timeout: float,
                     idle_timeout: float = KEEP_ALIVE_SECONDS) -> HypercornConfig:
    config = HypercornConfig()
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.read_timeout = int(read_timeout)
    config.keep_alive_timeout = idle_timeout
    config.graceful_timeout = graceful_timeout
    # room for a forwarded certificate chain in one header (an ALB sends whole PEM chains)
    config.h11_max_incomplete_size = MAX_HEADER_BYTES
    return config


class _WithExtensions(ASGIWrapper):
    """Adds connection-level entries to every request's ``scope["extensions"]``."""

    def __init__(self, app: Any, extensions: dict[str, Any]) -> None:
        super().__init__(app)
        self.extensions = extensions

    async def __call__(self, scope: Any, receive: Any, send: Any, sync_spawn: Callable[..., Any],
                       call_soon: Callable[..., Any]) -> None:
        scope = {**scope, "extensions": {**scope.get("extensions", {}), **self.extensions}}
        await self.app(scope, receive, send)


def _label(address: Any) -> str | None:
    return f"{address[0]}:{address[1]}" if address else None


class RequestDeadline:
    """Both ends of a connection, given to hypercorn, with one more rule: a request must
    arrive whole within ``timeout`` seconds of its first byte.

    hypercorn bounds each wait for data (read_timeout), not a client that trickles a byte
    at a time (slow loris). A request is answered when the server writes; until then,
    data that keeps arriving past the deadline closes the connection.
    """

    def __init__(self, reader: Any, writer: Any, timeout: float) -> None:
        self._reader = reader
        self._writer = writer
        self._timeout = timeout
        self._unanswered_since: float | None = None

    async def read(self, size: int) -> bytes:
        data: bytes = await self._reader.read(size)
        if data:
            now = time.monotonic()
            if self._unanswered_since is None:
                self._unanswered_since = now
            elif now - self._unanswered_since > self._timeout:
                log.warning("connection.request_timeout",
                            peer=_label(self._writer.get_extra_info("peername")),
                            timeout=self._timeout)
                # close now: hypercorn would keep the socket until its idle timer ran out
                self._writer.close()
                raise ConnectionResetError(
                    f"no whole request within {self._timeout:g} s (server.request_timeout)")
        return data

    def at_eof(self) -> bool:
        return bool(self._reader.at_eof())

    def write(self, data: bytes) -> None:
        self._unanswered_since = None
        self._writer.write(data)

    def __getattr__(self, name: str) -> Any:  # drain, close, get_extra_info, ...
        return getattr(self._writer, name)


class Http11Only(H11Protocol):
    """hypercorn's HTTP/1.1 without its switches to HTTP/2 (``Upgrade: h2c``, or the
    ``PRI *`` preface sent without ALPN): an HTTP/2 client's PINGs would keep a stalled
    request alive past RequestDeadline. The request is answered in HTTP/1.1 instead."""

    async def _check_protocol(self, event: Any) -> None:
        return None


def serve_http11_only() -> None:
    """Make hypercorn's connections use :class:`Http11Only` (omgate is its only user in
    the process; tests/test_hypercorn_glue.py checks the name it is looked up by)."""
    hypercorn.protocol.H11Protocol = Http11Only  # type: ignore[misc]


class HttpServing:
    """Serves the HTTP/1.1 connections of one ASGI app (ALPN never selects ``h2``)."""

    def __init__(self, app: Any, config: HypercornConfig, request_timeout: float = 60) -> None:
        serve_http11_only()
        self.app = app
        self.config = config
        self.request_timeout = request_timeout
        self.context = WorkerContext(None)
        self._state: dict[str, Any] = {}

    async def serve(self, reader: Any, writer: Any,
                    extensions: dict[str, Any] | None = None) -> None:
        app = _WithExtensions(self.app, extensions or {})
        guarded = RequestDeadline(reader, writer, self.request_timeout)
        await TCPServer(app, asyncio.get_running_loop(), self.config, self.context, self._state,
                        guarded, guarded)

    async def terminate(self) -> None:
        """Ask every connection to finish its request and close (graceful shutdown)."""
        await self.context.terminated.set()
