"""HTTP/1.1 for one connection: h11 and the ASGI app, without hypercorn's per-request layers.

hypercorn turns every request into a chain of its own events (``Request``, ``Body``,
``EndBody``, ``StreamClosed``) between its h11 protocol and an ``HTTPStream``, writes
the status line, the body and the end of the message separately (a lock and a drain
each), and hands the app a queue made with two closures per request. Measured under the
keep-alive bench, that was about half of what a message cost in HTTP/1.1, more than h11
itself. :class:`Http11` keeps what those layers do for an HTTP/1.1 server (the same ASGI
scope, errors, ``100 Continue``, pipelining, keep-alive and its limit, graceful close, the
500 for an app that failed before answering) and writes each answer in one piece. What it
reads at all is decided in :mod:`service.listeners.framing`: a head past its limits is
refused before h11 parses it, a request framed two ways once it has; either closes the
connection.

hypercorn still runs the connection: its ``TCPServer`` reads, writes and times out, and
``ProtocolWrapper`` builds this class where it would build its ``H11Protocol`` (see
:func:`service.listeners.hypercorn_glue.serve_http11_only`). There is no switch to HTTP/2
(``Upgrade: h2c`` or a bare preface) and no WebSocket: omgate serves neither.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any
from urllib.parse import unquote

import h11
from hypercorn.config import Config as HypercornConfig
from hypercorn.events import Closed, Event, RawData, Updated
from hypercorn.utils import build_and_validate_headers, suppress_body

from service.forwarded import format_address
from service.listeners.framing import (
    DEFAULT_LIMITS,
    NO_BODY,
    AnswerRefusal,
    HeadLimits,
    HeadScanner,
    Refusal,
    RefusalAnswer,
    bodiless,
    framing_refusal,
    malformed,
)
from service.logs import get_logger

log = get_logger("omgate")
Send = Callable[[Event], Awaitable[None]]
Message = dict[str, Any]


class UnexpectedMessageError(Exception):
    """The app sent an ASGI message an HTTP/1.1 answer cannot hold at this point."""


class Http11Config(HypercornConfig):
    """hypercorn's configuration, with what :class:`Http11` adds: the limits of a request
    head, and how a refused request is answered."""

    def __init__(self, head_limits: HeadLimits = DEFAULT_LIMITS,
                 answer_refusal: AnswerRefusal = bodiless) -> None:
        super().__init__()
        self.head_limits = head_limits
        self.answer_refusal = answer_refusal


class Http11:
    """One connection's HTTP/1.1, built by hypercorn's ``ProtocolWrapper`` with the
    arguments it gives ``H11Protocol``; ``send`` is the connection's ``protocol_send``."""

    def __init__(self, app: Any, config: Http11Config, context: Any, task_group: Any,
                 connection_state: Any, ssl: bool, client: tuple[str, int] | None,
                 server: tuple[str, int] | None, send: Send) -> None:
        self.app = app
        self.config = config
        self.context = context
        self.task_group = task_group
        self.connection_state = connection_state
        self.scheme = "https" if ssl else "http"
        self.client = client
        self.server = server
        self.send = send
        self.connection = h11.Connection(
            h11.SERVER, max_incomplete_event_size=config.h11_max_incomplete_size)
        self.exchange: Exchange | None = None
        self.requests = 0
        self.head = HeadScanner(config.head_limits)
        self.closed = False  # Closed was sent: nothing more is read or started
        self.can_read = asyncio.Event()
        self.can_read.set()
        self.sync_spawn = partial(asyncio.get_running_loop().run_in_executor, None)

    async def initiate(self) -> None:
        return None

    async def handle(self, event: Event) -> None:
        if isinstance(event, RawData):
            if self.closed:
                return
            if self.connection.their_state is h11.IDLE:  # a head, not yet parsed
                refusal = self.head.feed(event.data)
                if refusal is not None:
                    await self.refuse(refusal)
                    return
            self.connection.receive_data(event.data)
            await self._handle_events()
            if not event.data:
                await self._answer_before_closing()
        elif isinstance(event, Closed) and self.exchange is not None:
            self._end_exchange()

    async def _answer_before_closing(self) -> None:
        """The client closed its sending side after a whole request (a proxy may): the
        answer is still written before the connection closes, for as long as a connection
        that stayed open would wait for it (``read_timeout``); each write is bounded by
        ``server.write_timeout``. After a partial request the app hears ``http.disconnect``."""
        exchange = self.exchange
        if exchange is None or self.connection.their_state is not h11.CLOSED:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.config.read_timeout):
                await exchange.ended.wait()

    async def _handle_events(self) -> None:
        while True:
            if self.connection.they_are_waiting_for_100_continue:
                await self.write(self.connection.send(h11.InformationalResponse(
                    status_code=100, headers=self.config.response_headers("h11"))))
            try:
                event = self.connection.next_event()
            except h11.RemoteProtocolError as error:
                await self.refuse(malformed(error))
                break
            if isinstance(event, h11.Request):
                refusal = framing_refusal(event)
                if refusal is not None:
                    await self.refuse(refusal)
                    break
                await self.send(Updated(idle=False))
                self._start(event)
            elif event is h11.PAUSED:  # a pipelined request waits for the answer before it
                self.can_read.clear()
                await self.can_read.wait()
                if self.closed:
                    break
            elif (isinstance(event, h11.ConnectionClosed) or event is h11.NEED_DATA
                  or self.exchange is None):
                break
            elif isinstance(event, h11.Data):
                await self.exchange.received.put(
                    {"type": "http.request", "body": bytes(event.data), "more_body": True})
            elif isinstance(event, h11.EndOfMessage):
                await self.exchange.received.put(
                    {"type": "http.request", "body": b"", "more_body": False})

    def _start(self, request: h11.Request) -> None:
        path, _, query_string = request.target.partition(b"?")
        scope = {
            "type": "http",
            "http_version": request.http_version.decode(),
            "asgi": {"spec_version": "2.1", "version": "3.0"},  # an app may change its own
            "method": request.method.decode("ascii").upper(),
            "scheme": self.scheme,
            "path": unquote(path.decode("ascii")),
            "raw_path": path,
            "query_string": query_string,
            "root_path": self.config.root_path,
            "headers": list(request.headers),
            "client": self.client,
            "server": self.server,
            "state": self.connection_state.copy(),
            "extensions": {},
        }
        self.requests += 1
        self.exchange = Exchange(self, scope)
        self.task_group.spawn(self.exchange.run)

    def error_response(self, status_code: int, answer: RefusalAnswer = NO_BODY) -> bytes:
        """An answer that closes the connection (a refused request, a failed app)."""
        headers = [*answer.headers, (b"content-length", b"%d" % len(answer.body)),
                   (b"connection", b"close"), *self.config.response_headers("h11")]
        body = [h11.Data(data=answer.body)] if answer.body else []
        return self.h11_bytes(h11.Response(status_code=status_code, headers=headers), *body,
                              h11.EndOfMessage())

    async def refuse(self, refusal: Refusal) -> None:
        """Answer ``refusal`` (unless an answer has begun), then close the connection."""
        answer = self.config.answer_refusal(refusal)
        log.warning("connection.request_refused", reason=refusal.reason,
                    status=refusal.status, peer=format_address(self.client),
                    limit=refusal.limit, detail=refusal.message,
                    correlation_id=answer.correlation_id)
        if self.connection.our_state in {h11.IDLE, h11.SEND_RESPONSE}:
            await self.write(self.error_response(refusal.status, answer))
        await self.close()

    async def close(self) -> None:
        self.closed = True
        await self.send(Closed())

    def h11_bytes(self, *events: Any) -> bytes:
        """What h11 writes for ``events``; nothing for a connection it already gave up."""
        written = []
        for event in events:
            try:
                data = self.connection.send(event)
            except h11.LocalProtocolError:
                if self.connection.their_state != h11.ERROR:
                    raise
            else:
                if data:
                    written.append(data)
        return b"".join(written)

    async def write(self, data: bytes) -> None:
        if data:
            await self.send(RawData(data=data))

    def _end_exchange(self) -> None:
        """The request is over for the app: it hears ``http.disconnect`` if it listens."""
        exchange, self.exchange = self.exchange, None
        if exchange is not None:
            exchange.ended.set()
            # What the app left unread goes: a read loop waiting to queue more moves on.
            with contextlib.suppress(asyncio.QueueEmpty):
                while True:
                    exchange.received.get_nowait()
            exchange.received.put_nowait({"type": "http.disconnect"})

    async def answered(self) -> None:
        """The answer is written: take the next request (its head, if some has come, within
        the limits), or close."""
        self._end_exchange()
        if (not self.context.terminated.is_set()
                and self.connection.our_state is h11.DONE
                and self.connection.their_state is h11.DONE):
            try:
                self.connection.start_next_cycle()
            except h11.LocalProtocolError:
                await self.close()
            else:
                self.head.restart()
                refusal = self.head.feed(self.connection.trailing_data[0])
                if refusal is None:
                    await self.send(Updated(idle=True))
                else:
                    await self.refuse(refusal)
        else:
            await self.close()
        self.can_read.set()  # a pipelined request's turn, unless the connection closed

    def response_head(self, status: int, headers: list[tuple[bytes, bytes]]) -> h11.Response:
        headers = [*headers, *self.config.response_headers("h11")]
        if self.requests >= self.config.keep_alive_max_requests:
            headers.append((b"connection", b"close"))
        return h11.Response(status_code=status, headers=headers)


class Exchange:
    """One request and its answer, between the connection and the app's task. The status
    line waits for the first body message (as the ASGI spec allows), so that a whole
    answer leaves in one write."""

    def __init__(self, protocol: Http11, scope: dict[str, Any]) -> None:
        self.protocol = protocol
        self.scope = scope
        self.received: asyncio.Queue[Message] = asyncio.Queue(
            protocol.config.max_app_queue_size)
        self.started = False
        self.unsent_head: h11.Response | None = None
        self.silent = False  # a HEAD request, or a status without a body
        self.done = False
        self.ended = asyncio.Event()  # the connection is done with it (answered, or gone)

    async def run(self) -> None:
        try:
            await self.protocol.app(self.scope, self.received.get, self.send,
                                    self.protocol.sync_spawn, None)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - answered with a 500 below, as hypercorn does
            await self.protocol.config.log.exception("Error in ASGI Framework")
        finally:
            await self._after_app()

    async def _after_app(self) -> None:
        """An app that did not finish its answer: a 500 if it never began one, otherwise
        what it began, and the connection closes."""
        if self.done or self.protocol.exchange is not self:
            return
        self.done = True
        if not self.started:
            await self.protocol.write(self.protocol.error_response(500))
        elif self.unsent_head is not None:
            await self.protocol.write(self.protocol.h11_bytes(self.unsent_head))
        await self.protocol.answered()

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if self.done:
            raise UnexpectedMessageError(f"{kind} after the answer was complete")
        if kind == "http.response.start" and not self.started:
            status = int(message["status"])
            # h11 refuses a bad header here: the app then gets its 500, as if it had failed
            self.unsent_head = self.protocol.response_head(
                status, build_and_validate_headers(message.get("headers", [])))
            self.started = True
            self.silent = suppress_body(self.scope["method"], status)
        elif kind == "http.response.body" and self.started:
            events: list[Any] = []
            if self.unsent_head is not None:
                events.append(self.unsent_head)
                self.unsent_head = None
            body = message.get("body", b"")
            if body and not self.silent:
                events.append(h11.Data(data=bytes(body)))
            finishing = not message.get("more_body", False)
            if finishing:
                events.append(h11.EndOfMessage())
            # if h11 refuses (more body than the app declared), the answer is not done, and
            # the connection closes when the app ends
            await self.protocol.write(self.protocol.h11_bytes(*events))
            if finishing:
                self.done = True
                await self.protocol.answered()
        else:
            raise UnexpectedMessageError(
                f"{kind} while {'answering' if self.started else 'no answer has begun'}")
