"""Serving one ASGI app's HTTP/1.1 connections, as every listener of omgate does.

A listener accepts a connection as asyncio streams (its PROXY header and its TLS
handshake are read from them); :meth:`HttpServing.serve` then hands the socket to an
:class:`~service.listeners.connection.HttpConnection`, which serves it to the end.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any, cast

from service.listeners.connection import (
    DEFAULT_DEADLINES,
    ConnectionSettings,
    Deadlines,
    HttpConnection,
    Lifecycle,
)
from service.listeners.h1 import ConnectionRules
from service.listeners.hypercorn_glue import Http11Config
from service.listeners.layers import PLAIN, NetworkLayer


def take_buffered(reader: asyncio.StreamReader) -> tuple[bytes, bool]:
    """What the stream reader holds of the socket (read with a PROXY header or the last
    handshake record), and whether the client's end came with it. asyncio has no public
    way to take a reader's buffer without waiting for more: its two attributes are named
    in tests/unit/test_tripwires.py."""
    held: bytearray = reader._buffer  # type: ignore[attr-defined]
    buffered = bytes(held)
    held.clear()
    return buffered, bool(reader._eof)  # type: ignore[attr-defined]


class HttpServing:
    """Serves the HTTP/1.1 connections of one ASGI app."""

    def __init__(self, app: Any, config: Http11Config,
                 deadlines: Deadlines = DEFAULT_DEADLINES) -> None:
        self.app = app
        self.config = config
        self.deadlines = deadlines
        self.lifecycle = Lifecycle()
        self.settings = ConnectionSettings(
            app=app,
            rules=ConnectionRules(
                head_limits=config.head_limits, answer_refusal=config.answer_refusal,
                max_requests=config.keep_alive_max_requests,
                answer_headers=config.answer_headers,
                max_incomplete_bytes=config.h11_max_incomplete_size),
            deadlines=deadlines,
            read_timeout=math.inf if config.read_timeout is None else config.read_timeout,
            idle_timeout=config.keep_alive_timeout, root_path=config.root_path,
            queue_size=config.max_app_queue_size, log=config.log)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    extensions: dict[str, Any] | None = None,
                    layer: NetworkLayer = PLAIN) -> None:
        """Serve the connection of ``reader`` and ``writer`` until it has closed and its
        app calls have ended; ``layer``: the TLS connection whose handshake is done."""
        buffered, eof = take_buffered(reader)
        transport = cast(asyncio.Transport, writer.transport)
        connection = HttpConnection(self.settings, self.lifecycle, transport, layer,
                                    extensions or {})
        connection.begin(buffered, eof)
        await connection.finished()

    async def terminate(self) -> None:
        """Ask every connection to finish its request and close (graceful shutdown)."""
        self.lifecycle.terminate()
