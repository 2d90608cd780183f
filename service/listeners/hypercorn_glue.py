"""hypercorn's connection handler, as every listener of omgate runs it.

hypercorn's ``TCPServer`` serves one connection from a reader and a writer;
omgate hands it either plain asyncio streams or a :class:`TlsStream`, and its subclass
:class:`ReleasingTcpServer` is the one seam: it runs omgate's :class:`Http11` where
hypercorn would run its own protocols, and nothing is assigned into hypercorn's modules
(tests/unit/test_tripwires.py checks that no module of omgate does so). This module and
:mod:`service.listeners.http11` (hypercorn's events and header helpers) are where
hypercorn's internals are used; the capped hypercorn range in pyproject.toml,
tests/unit/test_tripwires.py (which names each of them) and tests/unit/test_hypercorn_glue.py guard
this coupling.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from ssl import SSLError
from typing import Any
from wsgiref.handlers import format_date_time

from hypercorn.app_wrappers import ASGIWrapper
from hypercorn.asyncio.task_group import TaskGroup
from hypercorn.asyncio.tcp_server import MAX_RECV, TCPServer
from hypercorn.asyncio.worker_context import WorkerContext
from hypercorn.events import Closed, RawData
from hypercorn.typing import ConnectionState
from hypercorn.utils import parse_socket_addr

from service.forwarded import format_address
from service.listeners.framing import (
    DEFAULT_LIMITS,
    MAX_HEAD_BYTES,
    AnswerRefusal,
    HeadLimits,
    bodiless,
)
from service.listeners.http11 import Http11, Http11Config
from service.logs import get_logger

log = get_logger("omgate")

KEEP_ALIVE_SECONDS = 15
# An interim answer asks for the body: the request is still being read (its deadline runs).
INTERIM_ANSWER = b"HTTP/1.1 100 "


class _DatedOncePerSecond(Http11Config):
    """hypercorn's configuration, with the Date header of its answers formatted once a
    second (hypercorn formats it for every answer); hypercorn's own adds the others."""

    include_date_header = False
    _second = -1
    _date = b""

    def response_headers(self, protocol: str) -> list[tuple[bytes, bytes]]:
        now = int(time.time())
        if now != self._second:
            self._second, self._date = now, format_date_time(now).encode("ascii")
        return [(b"date", self._date), *super().response_headers(protocol)]


def hypercorn_config(*, read_timeout: float, graceful_timeout: float,
                     idle_timeout: float = KEEP_ALIVE_SECONDS,
                     head_limits: HeadLimits = DEFAULT_LIMITS,
                     answer_refusal: AnswerRefusal = bodiless) -> Http11Config:
    config = _DatedOncePerSecond(head_limits, answer_refusal)
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.read_timeout = int(read_timeout)
    config.keep_alive_timeout = idle_timeout
    config.graceful_timeout = graceful_timeout
    # h11's own bound, behind the head limits Http11 checks before h11 parses
    config.h11_max_incomplete_size = MAX_HEAD_BYTES
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


@dataclass(frozen=True)
class Deadlines:
    """What a connection may take: a whole request from its first byte (slow loris), and
    any one write (a client that does not read what it asked for)."""

    request: float = 60
    write: float = 10


def cut_off(writer: Any) -> None:
    """Reset the connection at once: what it has not sent yet is dropped, by asyncio and by
    the kernel (a plain close would keep it queued for a client that does not read)."""
    transport = writer.transport
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


class DeadlineStream:
    """Both ends of a connection, given to hypercorn, with two more rules: a request must
    arrive whole within ``deadlines.request`` seconds of its first byte, and no write may
    wait more than ``deadlines.write`` seconds for the client to read.

    hypercorn bounds each wait for data (read_timeout), not a client that trickles a byte
    at a time (slow loris), and waits for a client to read its answers for ever. A request
    is answered when the server writes (a ``100 Continue`` is not an answer: the deadline
    still runs from the head's first byte); until then, data that keeps arriving past the
    deadline closes the connection.
    """

    def __init__(self, reader: Any, writer: Any, deadlines: Deadlines) -> None:
        self._reader = reader
        self._writer = writer
        self._deadlines = deadlines
        self._unanswered_since: float | None = None

    def _peer(self) -> str | None:
        return format_address(self._writer.get_extra_info("peername"))

    async def read(self, size: int) -> bytes:
        data: bytes = await self._reader.read(size)
        if data:
            now = time.monotonic()
            if self._unanswered_since is None:
                self._unanswered_since = now
            elif now - self._unanswered_since > self._deadlines.request:
                log.warning("connection.request_timeout", peer=self._peer(),
                            timeout=self._deadlines.request)
                raise ConnectionResetError(f"no whole request within "
                                           f"{self._deadlines.request:g} s "
                                           "(server.request_timeout)")
        return data

    def at_eof(self) -> bool:
        return bool(self._reader.at_eof())

    def write(self, data: bytes) -> None:
        if not data.startswith(INTERIM_ANSWER):  # Http11 writes a 100 Continue on its own
            self._unanswered_since = None
        self._writer.write(data)

    async def _within_write_deadline(self, waiting: Awaitable[None]) -> None:
        try:
            async with asyncio.timeout(self._deadlines.write):  # no task, unlike wait_for
                await waiting
        except TimeoutError:
            log.warning("connection.write_timeout", peer=self._peer(),
                        timeout=self._deadlines.write)
            cut_off(self._writer)
            raise ConnectionResetError(f"the client did not read for "
                                       f"{self._deadlines.write:g} s "
                                       "(server.write_timeout)") from None

    async def drain(self) -> None:
        transport = self._writer.transport
        low_water, _high = transport.get_write_buffer_limits()
        if not transport.is_closing() and transport.get_write_buffer_size() <= low_water:
            return  # drain would not wait: spare the deadline its timer
        await self._within_write_deadline(self._writer.drain())

    async def wait_closed(self) -> None:
        """A closing transport first sends what it holds: as long as a write may take."""
        await self._within_write_deadline(self._writer.wait_closed())

    def __getattr__(self, name: str) -> Any:  # close, write_eof, get_extra_info, ...
        return getattr(self._writer, name)


class IdleTimer:
    """hypercorn's idle task (``TCPServer.idle_task``) as one timer callback.

    hypercorn stops the task at every request and starts a new one after it, which waits
    with wait_for (a task and a timer of its own): three tasks per request. The timer
    closes the connection as hypercorn's ``_idle_timeout`` does, after
    ``keep_alive_timeout`` (``server.idle_timeout``) or at once when the server is
    terminating (:meth:`HttpServing.terminate` expires every idle one).
    """

    def __init__(self, server: ReleasingTcpServer, idle: set[IdleTimer]) -> None:
        self._server = server
        self._idle = idle
        self._handle: asyncio.TimerHandle | None = None

    async def restart(self, _task_group: Any, _action: Any) -> None:
        self._cancel()
        if self._server.context.terminated.is_set():
            self.expire()
            return
        self._handle = asyncio.get_running_loop().call_later(
            self._server.config.keep_alive_timeout, self.expire)
        self._idle.add(self)

    async def stop(self) -> None:
        self._cancel()

    def _cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._idle.discard(self)

    def expire(self) -> None:
        self._cancel()
        self._server.close_idle()


class ReleasingTcpServer(TCPServer):
    """hypercorn's connection speaking omgate's :class:`Http11`, released as soon as its
    client has gone, with its idle task as an :class:`IdleTimer` and its read timeout as
    a timer.

    When its read loop ends, hypercorn closes the socket only after every task of the
    connection has ended, its idle timer (``server.idle_timeout``) included: a client that
    closed a kept-alive connection left its descriptor and state behind for that long.
    Closing at once also stops the idle timer.
    """

    config: Http11Config  # HttpServing builds it with one

    def __init__(self, *args: Any, idle: set[IdleTimer]) -> None:
        super().__init__(*args)
        self.idle_task = IdleTimer(self, idle)  # type: ignore[assignment]

    async def run(self) -> None:
        """hypercorn's ``run``, building :class:`Http11` where hypercorn builds its
        ``ProtocolWrapper``, which would speak HTTP/2 on ALPN ``h2``, switch to it on
        ``Upgrade: h2c`` or a bare preface, and whose PINGs would keep a stalled request
        alive past its deadline. omgate serves HTTP/1.1 only, with its own rules."""
        socket_ = self.writer.get_extra_info("socket")
        try:
            client = parse_socket_addr(socket_.family, socket_.getpeername())
            server = parse_socket_addr(socket_.family, socket_.getsockname())
            ssl = self.writer.get_extra_info("ssl_object") is not None
            async with TaskGroup(self.loop) as task_group:
                self._task_group = task_group
                self.protocol = Http11(  # type: ignore[assignment]
                    self.app, self.config, self.context, task_group,
                    ConnectionState(self.state), ssl, client, server, self.protocol_send)
                await self.idle_task.restart(task_group, self._idle_timeout)
                await self._read_data()
        except OSError:
            pass
        finally:
            await self._close()

    async def _read_data(self) -> None:
        # hypercorn's read loop, with asyncio.timeout (a timer) where it has wait_for (a
        # task and a timer for every read); then the connection is released.
        while not self.reader.at_eof():
            try:
                async with asyncio.timeout(self.config.read_timeout):
                    data = await self.reader.read(MAX_RECV)
            except (ConnectionError, OSError, TimeoutError, SSLError):
                break
            await self.protocol.handle(RawData(data))
        await self.protocol.handle(Closed())
        await self._close()

    def close_idle(self) -> None:
        """What hypercorn's ``_idle_timeout`` does once it has waited."""
        self._task_group.spawn(self._initiate_server_close)


class HttpServing:
    """Serves the HTTP/1.1 connections of one ASGI app (ALPN never selects ``h2``)."""

    def __init__(self, app: Any, config: Http11Config,
                 deadlines: Deadlines = Deadlines()) -> None:
        self.app = app
        self.config = config
        self.deadlines = deadlines
        self.context = WorkerContext(None)
        self._state: dict[str, Any] = {}
        self._idle: set[IdleTimer] = set()

    async def serve(self, reader: Any, writer: Any,
                    extensions: dict[str, Any] | None = None) -> None:
        app = _WithExtensions(self.app, extensions or {})
        guarded = DeadlineStream(reader, writer, self.deadlines)
        # hypercorn names asyncio's stream classes, but uses only the methods DeadlineStream
        # has (read, at_eof; write, drain, write_eof, close, wait_closed, get_extra_info).
        await ReleasingTcpServer(app, asyncio.get_running_loop(), self.config, self.context,
                                 self._state, guarded, guarded, idle=self._idle)

    async def terminate(self) -> None:
        """Ask every connection to finish its request and close (graceful shutdown)."""
        await self.context.terminated.set()
        for idle in list(self._idle):
            idle.expire()
