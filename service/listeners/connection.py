"""One HTTP/1.1 connection driven by its socket's events, with every deadline in one place.

:class:`HttpConnection` is the asyncio protocol of a connection once it is accepted (and,
on the TLS listener, once its handshake is done): the socket's bytes go through its
:class:`~service.listeners.layers.NetworkLayer` into the sans-IO core
(:mod:`service.listeners.h1`), and the core's actions are carried out here: write these
bytes, call the app, hand it the body, wait, close. No stream pair, no read task: a
record that arrives is decrypted, parsed and handed over in the one call asyncio makes.

Each deadline is a :class:`Deadline` (one timer, pushed back without being rescheduled):

- ``idle``: no request begun for ``server.idle_timeout`` after the last answer (or the
  connection's start): closed; at once while the server stops;
- ``request``: a request must arrive whole within ``server.request_timeout`` of its first
  byte (a client trickling bytes, slow loris): ``connection.request_timeout``, closed;
- ``read``: no byte of a request under way for ``server.read_timeout``: closed;
- ``write``: the client has not read what was written for ``server.write_timeout``
  (asyncio asked the protocol to pause writing, or a closing connection still holds
  bytes): ``connection.write_timeout``, reset with what it left unread dropped;
- ``linger``: a client that closed its sending side after a whole request is answered
  for as long as ``server.read_timeout``, then closed.

The connection is released as soon as its socket closes; the task that accepted it
(:meth:`HttpServing.serve`) ends once its app calls have ended too.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import struct
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from hypercorn.logging import Logger
from hypercorn.utils import build_and_validate_headers, parse_socket_addr

from service.forwarded import format_address
from service.listeners.h1 import (
    Action,
    AnswerThenClose,
    Close,
    ConnectionRules,
    Exchange,
    ExchangeEnded,
    Idle,
    Refused,
    RequestBody,
    ServerConnection,
    StartExchange,
    UnexpectedMessageError,
    WaitForAnswer,
    Write,
)
from service.listeners.layers import LayerError, NetworkLayer
from service.logs import get_logger

log = get_logger("omgate")
Message = dict[str, Any]
App = Callable[[Message, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
               Awaitable[None]]


@dataclass(frozen=True)
class Deadlines:
    """What a connection may take: a whole request from its first byte (slow loris), and
    any one write (a client that does not read what it asked for)."""

    request: float = 60
    write: float = 10


DEFAULT_DEADLINES = Deadlines()

@dataclass(frozen=True)
class ConnectionSettings:
    """What every connection of one listener's app is served with."""

    app: App
    rules: ConnectionRules
    deadlines: Deadlines
    read_timeout: float
    idle_timeout: float
    root_path: str
    queue_size: int  # request messages the app may leave unread before reading pauses
    log: Logger  # hypercorn's error log, for an app that fails


@dataclass
class Lifecycle:
    """What the connections of one app share: whether the server is stopping, and which of
    them are idle (closed at once when it does)."""

    terminating: bool = False
    idle: set[HttpConnection] = field(default_factory=set)

    def terminate(self) -> None:
        self.terminating = True
        for connection in list(self.idle):
            connection.close()


class Deadline:
    """A callback ``seconds`` after the deadline was last set. Setting it again only moves
    the time: the timer, when it fires early, waits for the rest (a read that arrives does
    not cancel and make a timer)."""

    __slots__ = ("_at", "_callback", "_handle", "_loop", "seconds")

    def __init__(self, loop: asyncio.AbstractEventLoop, seconds: float,
                 callback: Callable[[], None]) -> None:
        self._loop = loop
        self._callback = callback
        self._handle: asyncio.TimerHandle | None = None
        self._at: float | None = None
        self.seconds = seconds

    def set(self) -> None:
        if self.seconds == math.inf:  # hypercorn's "no timeout"
            return
        self._at = self._loop.time() + self.seconds
        if self._handle is None:
            self._handle = self._loop.call_at(self._at, self._fire)

    def clear(self) -> None:
        self._at = None  # a timer under way finds nothing to do

    def cancel(self) -> None:
        self._at = None
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self) -> None:
        self._handle = None
        if self._at is None:
            return
        if self._loop.time() < self._at:
            self._handle = self._loop.call_at(self._at, self._fire)
            return
        self._at = None
        self._callback()


def cut_off(transport: asyncio.BaseTransport) -> None:
    """Reset the connection at once: what it has not sent yet is dropped, by asyncio and by
    the kernel (a plain close would keep it queued for a client that does not read)."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()  # type: ignore[attr-defined]


def socket_addresses(transport: asyncio.BaseTransport
                     ) -> tuple[tuple[str, int] | None, tuple[str, int] | None]:
    """The client's and the server's address, as the ASGI scope gives them."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return None, None
    return (parse_socket_addr(sock.family, transport.get_extra_info("peername")),
            parse_socket_addr(sock.family, transport.get_extra_info("sockname")))


class HttpConnection(asyncio.Protocol):
    """One client connection's HTTP/1.1, from the socket's events to the app's calls."""

    def __init__(self, settings: ConnectionSettings, lifecycle: Lifecycle,
                 transport: asyncio.Transport, layer: NetworkLayer,
                 extensions: dict[str, Any]) -> None:
        loop = asyncio.get_running_loop()
        self.settings = settings
        self.lifecycle = lifecycle
        self.transport = transport
        self.layer = layer
        self.extensions = extensions
        self.client, self.server = socket_addresses(transport)
        self.core = ServerConnection(settings.rules)
        self.call: AppCall | None = None  # the app answering the current exchange
        self.tasks: set[asyncio.Task[None]] = set()
        self.closing = False
        self.request_open = False  # a request's first byte came, its last has not
        self.waiting_for_answer = False  # a pipelined request waits for the current answer
        self.body_backlog = False  # the app has left queue_size messages unread
        self.writing_paused = False
        self.drained: asyncio.Future[None] | None = None
        self.closed: asyncio.Future[None] = loop.create_future()
        deadlines = settings.deadlines
        self.idle = Deadline(loop, settings.idle_timeout, self.close)
        self.request = Deadline(loop, deadlines.request, self._request_timed_out)
        self.read = Deadline(loop, settings.read_timeout, self.close)
        self.write = Deadline(loop, deadlines.write, self._write_timed_out)
        self.linger = Deadline(loop, settings.read_timeout, self.close)

    # -- the socket's events -------------------------------------------------------------

    def begin(self, buffered: bytes, eof: bool) -> None:
        """Take the socket over: what was read before (a PROXY header's reader, the
        handshake), and the client's end if it came then."""
        self.transport.set_protocol(self)
        if self.transport.is_closing():  # the client went before: asyncio closed it already
            self.connection_lost(None)
            return
        self._become_idle()
        self.data_received(buffered)  # a TLS layer may hold a request sent with its Finished
        if eof:
            self.eof_received()
        elif not self.transport.is_reading() and not self.closing:
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        try:
            received = self.layer.receive(data)
        except LayerError:  # a forged or broken record: nothing more can be read
            self.abort()
            return
        if received.reply:
            self.transport.write(received.reply)
        if received.data:
            if not self.request_open:
                self._open_request()
            self.read.set()
            self.carry_out(self.core.receive(received.data))
        if received.closed:
            self.eof_received()

    def eof_received(self) -> bool:
        """The client closed its sending side: its whole request is still answered."""
        if not self.closing:
            actions = self.core.receive(b"")
            self.carry_out(actions)
            if not any(isinstance(action, AnswerThenClose) for action in actions):
                self.close()
        return True  # the transport stays open for the answer

    def pause_writing(self) -> None:
        self.writing_paused = True
        self.write.set()

    def resume_writing(self) -> None:
        self.writing_paused = False
        self.write.clear()
        self._wake_drained()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        for deadline in (self.idle, self.request, self.read, self.write, self.linger):
            deadline.cancel()
        self.lifecycle.idle.discard(self)
        self.carry_out(self.core.connection_lost())
        self._wake_drained()
        if not self.closed.done():
            self.closed.set_result(None)

    # -- the core's actions ----------------------------------------------------------------

    def carry_out(self, actions: Iterable[Action]) -> None:
        """Each action in turn (tested likeliest first)."""
        pending = deque(actions)
        while pending:
            action = pending.popleft()
            kind = type(action)
            if kind is Write:
                self._write(action.data)  # type: ignore[union-attr]
            elif kind is RequestBody:
                self._hand_body(action)  # type: ignore[arg-type]
            elif kind is ExchangeEnded:
                self._end_call(action.exchange)  # type: ignore[union-attr]
            elif kind is Idle:
                self._become_idle()
            elif kind is StartExchange:
                self._start(action.exchange)  # type: ignore[union-attr]
            elif kind is WaitForAnswer:
                # its deadlines start when its turn comes: the app before it may take long
                self.waiting_for_answer = True
                self._request_done()
                self.update_reading()
            elif kind is AnswerThenClose:
                self.linger.set()
            elif kind is Refused:
                self._log_refusal(action)  # type: ignore[arg-type]
            elif kind is Close:
                self.close()

    def answer_complete(self) -> None:
        """The current answer is written: a pipelined request's turn, unless it closed."""
        if self.waiting_for_answer:
            self.waiting_for_answer = False
            self.update_reading()
            self.carry_out(self.core.resume())

    def _write(self, data: bytes) -> None:
        if not data or self.closing:
            return
        try:
            self.transport.write(self.layer.send(data))
        except LayerError:
            self.abort()

    def _hand_body(self, body: RequestBody) -> None:
        if not body.more_body:
            self._request_done()
        call = self.call
        if call is not None:
            call.put({"type": "http.request", "body": body.body, "more_body": body.more_body})
            if len(call.messages) >= self.settings.queue_size:
                self.body_backlog = True
                self.update_reading()

    def _start(self, exchange: Exchange) -> None:
        if not self.request_open:  # a pipelined request, read with the one before
            self._open_request()
        request = exchange.request
        path, _, query_string = request.target.partition(b"?")
        scope = {
            "type": "http",
            "http_version": request.http_version.decode(),
            "asgi": {"spec_version": "2.1", "version": "3.0"},
            "method": request.method.decode("ascii").upper(),
            "scheme": self.layer.scheme,
            "path": unquote(path.decode("ascii")),
            "raw_path": path,
            "query_string": query_string,
            "root_path": self.settings.root_path,
            "headers": list(request.headers),
            "client": self.client,
            "server": self.server,
            "state": {},
            "extensions": dict(self.extensions),
        }
        self.call = AppCall(self, exchange, scope)
        task = asyncio.get_running_loop().create_task(self.call.run())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def body_taken(self) -> None:
        """The app read a part of the body: reading goes on if it had paused for it and
        the app has left fewer than queue_size messages."""
        call = self.call
        if self.body_backlog and (call is None or len(call.messages) < self.settings.queue_size):
            self.body_backlog = False
            self.update_reading()

    def _end_call(self, exchange: Exchange) -> None:
        """The request is over for the app: it hears ``http.disconnect`` if it listens."""
        call = self.call
        if call is None or call.exchange is not exchange:
            return
        self.call = None
        call.end()
        self.body_taken()  # nothing of it is left to read

    def _log_refusal(self, refused: Refused) -> None:
        refusal = refused.refusal
        log.warning("connection.request_refused", reason=refusal.reason,
                    status=refusal.status, peer=format_address(self.client),
                    limit=refusal.limit, detail=refusal.message,
                    correlation_id=refused.correlation_id)

    # -- the deadlines -------------------------------------------------------------------

    def _become_idle(self) -> None:
        if self.lifecycle.terminating:
            self.close()
            return
        self.idle.set()
        self.lifecycle.idle.add(self)

    def _open_request(self) -> None:
        self.request_open = True
        self.idle.clear()
        self.lifecycle.idle.discard(self)
        self.request.set()

    def _request_done(self) -> None:
        self.request_open = False
        self.request.clear()
        self.read.clear()

    def _request_timed_out(self) -> None:
        log.warning("connection.request_timeout", peer=format_address(self.client),
                    timeout=self.settings.deadlines.request)
        self.close()

    def _write_timed_out(self) -> None:
        log.warning("connection.write_timeout", peer=format_address(self.client),
                    timeout=self.settings.deadlines.write)
        self.abort()

    # -- flow and closing ------------------------------------------------------------------

    def update_reading(self) -> None:
        if self.closing:
            return
        if self.waiting_for_answer or self.body_backlog:
            self.read.clear()  # the client is not the one keeping the request waiting
            if self.transport.is_reading():
                self.transport.pause_reading()
        elif not self.transport.is_reading():
            if self.request_open:
                self.read.set()
            self.transport.resume_reading()

    async def drain(self) -> None:
        """Until the client has read enough of what was written (bounded by the write
        deadline)."""
        while self.writing_paused and not self.closing:
            if self.drained is None:
                self.drained = asyncio.get_running_loop().create_future()
            await self.drained

    def _wake_drained(self) -> None:
        drained, self.drained = self.drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)

    def close(self) -> None:
        """Close the connection: the app hears ``http.disconnect``; what was written still
        goes, for as long as a write may take."""
        if self.closing:
            return
        self.closing = True
        self.lifecycle.idle.discard(self)
        for deadline in (self.idle, self.request, self.read, self.linger):
            deadline.cancel()
        self.carry_out(self.core.connection_lost())
        with contextlib.suppress(LayerError):
            ending = self.layer.close()
            if ending:
                self.transport.write(ending)
        self.transport.close()
        if self.transport.get_write_buffer_size():
            self.write.set()

    def abort(self) -> None:
        """Reset the connection, dropping what it has not sent."""
        self.closing = True
        cut_off(self.transport)

    async def finished(self) -> None:
        """Until the socket is closed and every app call of the connection has ended."""
        try:
            await asyncio.shield(self.closed)
        finally:
            if not self.closed.done():  # the serving task was cancelled
                self.abort()
        while self.tasks:
            await asyncio.wait(set(self.tasks))


class AppCall:
    """The app answering one exchange: its task's messages, in and out."""

    __slots__ = ("connection", "ended", "exchange", "messages", "scope", "waiter")

    def __init__(self, connection: HttpConnection, exchange: Exchange,
                 scope: dict[str, Any]) -> None:
        self.connection = connection
        self.exchange = exchange
        self.scope = scope
        self.messages: deque[Message] = deque()
        self.waiter: asyncio.Future[None] | None = None
        self.ended = False  # the connection is done with it (answered, or gone)

    def put(self, message: Message) -> None:
        self.messages.append(message)
        self._wake()

    def end(self) -> None:
        """What the app left unread goes; it hears ``http.disconnect`` from now on."""
        self.ended = True
        self.messages.clear()
        self._wake()

    def _wake(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def receive(self) -> Message:
        while not self.messages:
            if self.ended:
                return {"type": "http.disconnect"}  # a new one: an app may change it
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter
        message = self.messages.popleft()
        if self.connection.call is self:
            self.connection.body_taken()
        return message

    async def run(self) -> None:
        connection = self.connection
        try:
            await connection.settings.app(self.scope, self.receive, self.send)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - answered with a 500 below, as hypercorn does
            await connection.settings.log.exception("Error in ASGI Framework")
        finally:
            connection.carry_out(connection.core.app_ended(self.exchange))

    async def send(self, message: Message) -> None:
        connection = self.connection
        kind = message["type"]
        if kind == "http.response.start":
            # a header the core refuses (InvalidAnswerError): the app then gets its 500
            connection.core.start_answer(self.exchange, int(message["status"]),
                                         build_and_validate_headers(message.get("headers", [])),
                                         last=connection.lifecycle.terminating)
        elif kind == "http.response.body":
            more_body = bool(message.get("more_body", False))
            connection.carry_out(connection.core.send_body(
                self.exchange, bytes(message.get("body", b"")), more_body,
                reuse=not connection.lifecycle.terminating))
            if not more_body:
                connection.answer_complete()
            if connection.writing_paused:
                await connection.drain()
        else:
            raise UnexpectedMessageError(f"{kind} is not part of an HTTP answer")
