"""HTTP/1.1 for one connection: the sans-IO core's actions carried out for an ASGI app,
without hypercorn's per-request layers.

hypercorn turns every request into a chain of its own events (``Request``, ``Body``,
``EndBody``, ``StreamClosed``) between its h11 protocol and an ``HTTPStream``, writes
the status line, the body and the end of the message separately (a lock and a drain
each), and hands the app a queue made with two closures per request. Measured under the
keep-alive bench, that was about half of what a message cost in HTTP/1.1, more than h11
itself. :class:`Http11` keeps what those layers do for an HTTP/1.1 server (the same ASGI
scope, errors, ``100 Continue``, pipelining, keep-alive and its limit, graceful close, the
500 for an app that failed before answering) and writes each answer in one piece. Every
rule of the protocol is decided in :mod:`service.listeners.h1` (bytes in, actions out);
this module only carries its actions out: writes, the app's task and queue, waits, logs.

hypercorn still runs the connection: its ``TCPServer`` reads, writes and times out, and
:class:`service.listeners.hypercorn_glue.ReleasingTcpServer` builds this class where
hypercorn would build its ``ProtocolWrapper``. There is no switch to HTTP/2 (``Upgrade:
h2c`` or a bare preface) and no WebSocket: omgate serves neither.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any
from urllib.parse import unquote

from hypercorn.config import Config as HypercornConfig
from hypercorn.events import Closed, Event, RawData, Updated
from hypercorn.utils import build_and_validate_headers

from service.forwarded import format_address
from service.listeners.framing import DEFAULT_LIMITS, AnswerRefusal, HeadLimits, bodiless
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
from service.logs import get_logger

log = get_logger("omgate")
Send = Callable[[Event], Awaitable[None]]
Message = dict[str, Any]


class Http11Config(HypercornConfig):
    """hypercorn's configuration, with what :class:`Http11` adds: the limits of a request
    head, and how a refused request is answered."""

    def __init__(self, head_limits: HeadLimits = DEFAULT_LIMITS,
                 answer_refusal: AnswerRefusal = bodiless) -> None:
        super().__init__()
        self.head_limits = head_limits
        self.answer_refusal = answer_refusal


class Http11:
    """One connection's HTTP/1.1, built by ``ReleasingTcpServer`` with the arguments
    hypercorn gives its own protocols; ``send`` is the connection's ``protocol_send``."""

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
        self.core = ServerConnection(ConnectionRules(
            head_limits=config.head_limits, answer_refusal=config.answer_refusal,
            max_requests=config.keep_alive_max_requests,
            answer_headers=partial(config.response_headers, "h11"),
            max_incomplete_bytes=config.h11_max_incomplete_size))
        self.call: AppCall | None = None  # the app answering the current exchange
        self.can_read = asyncio.Event()  # cleared while a pipelined request waits
        self.can_read.set()
        self.sync_spawn = partial(asyncio.get_running_loop().run_in_executor, None)

    async def handle(self, event: Event) -> None:
        if isinstance(event, RawData):
            await self.carry_out(self.core.receive(event.data))
        elif isinstance(event, Closed):
            await self.carry_out(self.core.connection_lost())
            self.can_read.set()

    async def carry_out(self, actions: Sequence[Action]) -> None:
        """Each action in turn (tested likeliest first)."""
        pending = deque(actions)
        while pending:
            action = pending.popleft()
            if isinstance(action, Write):
                if action.data:
                    await self.send(RawData(data=action.data))
            elif isinstance(action, RequestBody):
                if self.call is not None:
                    await self.call.received.put({"type": "http.request", "body": action.body,
                                                  "more_body": action.more_body})
            elif isinstance(action, ExchangeEnded):
                self._end_call(action.exchange)
            elif isinstance(action, Idle):
                await self.send(Updated(idle=True))
            elif isinstance(action, StartExchange):
                await self.send(Updated(idle=False))
                self._start(action.exchange)
            elif isinstance(action, WaitForAnswer):
                self.can_read.clear()
                await self.can_read.wait()
                # in this loop, not a call deeper: one read may hold thousands of requests
                pending.extend(self.core.resume())
            elif isinstance(action, AnswerThenClose):
                await self._answer_before_closing(action.exchange)
            elif isinstance(action, Refused):
                self._log_refusal(action)
            elif isinstance(action, Close):
                await self.send(Closed())

    async def _answer_before_closing(self, exchange: Exchange) -> None:
        """The client closed its sending side after a whole request (a proxy may): the
        answer is still written before the connection closes, for as long as a connection
        that stayed open would wait for it (``read_timeout``); each write is bounded by
        ``server.write_timeout``. After a partial request the app hears ``http.disconnect``."""
        call = self.call
        if call is None or call.exchange is not exchange:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.config.read_timeout):
                await call.ended.wait()

    def _start(self, exchange: Exchange) -> None:
        request = exchange.request
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
        self.call = AppCall(self, exchange, scope)
        self.task_group.spawn(self.call.run)

    def _log_refusal(self, refused: Refused) -> None:
        refusal = refused.refusal
        log.warning("connection.request_refused", reason=refusal.reason,
                    status=refusal.status, peer=format_address(self.client),
                    limit=refusal.limit, detail=refusal.message,
                    correlation_id=refused.correlation_id)

    def _end_call(self, exchange: Exchange) -> None:
        """The request is over for the app: it hears ``http.disconnect`` if it listens."""
        call = self.call
        if call is None or call.exchange is not exchange:
            return
        self.call = None
        call.ended.set()
        # What the app left unread goes: a read loop waiting to queue more moves on.
        with contextlib.suppress(asyncio.QueueEmpty):
            while True:
                call.received.get_nowait()
        call.received.put_nowait({"type": "http.disconnect"})

    @property
    def reusable(self) -> bool:
        """Whether the connection may take another request (not while the server stops)."""
        return not self.context.terminated.is_set()


class AppCall:
    """The app answering one exchange: its task, the queue it reads the request from, and
    its messages handed to the core."""

    def __init__(self, protocol: Http11, exchange: Exchange, scope: dict[str, Any]) -> None:
        self.protocol = protocol
        self.exchange = exchange
        self.scope = scope
        self.received: asyncio.Queue[Message] = asyncio.Queue(
            protocol.config.max_app_queue_size)
        self.ended = asyncio.Event()  # the connection is done with it (answered, or gone)

    async def run(self) -> None:
        protocol = self.protocol
        try:
            await protocol.app(self.scope, self.received.get, self.send, protocol.sync_spawn,
                               None)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - answered with a 500 below, as hypercorn does
            await protocol.config.log.exception("Error in ASGI Framework")
        finally:
            actions = protocol.core.app_ended(self.exchange)
            if actions:
                await protocol.carry_out(actions)
                protocol.can_read.set()

    async def send(self, message: Message) -> None:
        protocol = self.protocol
        kind = message["type"]
        if kind == "http.response.start":
            # InvalidAnswerError for a bad header: the app then gets its 500, as if it failed
            protocol.core.start_answer(self.exchange, int(message["status"]),
                                       build_and_validate_headers(message.get("headers", [])))
        elif kind == "http.response.body":
            more_body = bool(message.get("more_body", False))
            await protocol.carry_out(protocol.core.send_body(
                self.exchange, bytes(message.get("body", b"")), more_body,
                reuse=protocol.reusable))
            if not more_body:
                protocol.can_read.set()  # a pipelined request's turn, unless it closed
        else:
            raise UnexpectedMessageError(f"{kind} is not part of an HTTP answer")
