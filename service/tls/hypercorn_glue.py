"""Everything omgate uses of hypercorn's internals, in one small module.

hypercorn's ``TCPServer`` serves one connection from a reader and a writer;
omgate hands it either plain asyncio streams or a :class:`TlsStream`. The
pinned hypercorn range in pyproject.toml and tests/test_hypercorn_glue.py guard
this coupling.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from hypercorn.app_wrappers import ASGIWrapper
from hypercorn.asyncio.tcp_server import TCPServer
from hypercorn.asyncio.worker_context import WorkerContext
from hypercorn.config import Config as HypercornConfig

KEEP_ALIVE_SECONDS = 15


def hypercorn_config(*, read_timeout: float, graceful_timeout: float) -> HypercornConfig:
    config = HypercornConfig()
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.read_timeout = int(read_timeout)
    config.keep_alive_timeout = KEEP_ALIVE_SECONDS
    config.graceful_timeout = graceful_timeout
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


class HttpServing:
    """Serves HTTP/1.1 (and HTTP/2 after ALPN ``h2``) connections of one ASGI app."""

    def __init__(self, app: Any, config: HypercornConfig) -> None:
        self.app = app
        self.config = config
        self.context = WorkerContext(None)
        self._state: dict[str, Any] = {}

    async def serve(self, reader: Any, writer: Any,
                    extensions: dict[str, Any] | None = None) -> None:
        app = _WithExtensions(self.app, extensions or {})
        await TCPServer(app, asyncio.get_running_loop(), self.config, self.context, self._state,
                        reader, writer)

    async def terminate(self) -> None:
        """Ask every connection to finish its request and close (graceful shutdown)."""
        await self.context.terminated.set()
