"""One HTTP/1.1 server connection without I/O: bytes in, actions out.

Every rule on what omgate reads and writes on a connection is decided here, in the style
of h11's ``_connection.py``: :meth:`ServerConnection.receive` takes the bytes the client
sent (``b""`` when it closed its side) and the app's answer goes in through
:meth:`~ServerConnection.start_answer` and :meth:`~ServerConnection.send_body`; each
returns the :data:`Action` list the driver carries out in order (write these bytes, start
this exchange, hand the app this body, wait, close). Nothing here reads a clock, a socket
or a task: the driver (:mod:`service.listeners.http11`) does, and the tests in
tests/unit/test_h1.py hold every rule bytes in, bytes out.

h11 parses and frames (httptools parses far faster, as measured in docs/PERFORMANCE.md,
"The HTTP/1.1 core": a swap would touch this module only); what h11 does not bound or
refuse is added around it from
:mod:`service.listeners.framing` (a head's lines before h11 parses them, one framing per
request). A refusal is answered (unless an answer has begun) and closes the connection.

The state of an exchange's answer is one value, moved only by :data:`ANSWER_MOVES`::

    waiting --start--> head_held --body--> streaming --body--> streaming
                                  \\--last--> complete  <--last--/

The head of an answer is held until its first body (as the ASGI spec allows), so that a
whole answer leaves in one write.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import h11

from service.listeners.framing import (
    NO_BODY,
    AnswerRefusal,
    HeadLimits,
    HeadScanner,
    Refusal,
    RefusalAnswer,
    framing_refusal,
    malformed,
)

Headers = list[tuple[bytes, bytes]]
AnswerState = Literal["waiting", "head_held", "streaming", "complete"]
AnswerEvent = Literal["start", "body", "last"]
ANSWER_MOVES: dict[tuple[AnswerState, AnswerEvent], AnswerState] = {
    ("waiting", "start"): "head_held",
    ("head_held", "body"): "streaming",
    ("head_held", "last"): "complete",
    ("streaming", "body"): "streaming",
    ("streaming", "last"): "complete",
}
# Answers that never carry a body, whatever the app gives (RFC 9110 sections 6.4.1, 9.3.2)
BODILESS_STATUSES = frozenset({204, 304})


class UnexpectedMessageError(Exception):
    """The app sent an ASGI message an HTTP/1.1 answer cannot hold at this point."""


@dataclass(eq=False)
class Exchange:
    """One request on the connection and the state of its answer. Identity matters: an
    exchange the connection has ended (answered, or its client gone) takes no more bytes."""

    request: h11.Request
    number: int
    answer: AnswerState = "waiting"
    held_head: h11.Response | None = None
    silent: bool = False  # a HEAD request, or a status without a body

    def after(self, event: AnswerEvent) -> AnswerState:
        """The answer's state once ``event`` is written (it moves only once it is)."""
        moved = ANSWER_MOVES.get((self.answer, event))
        if moved is None:
            kind = "http.response.start" if event == "start" else "http.response.body"
            where = {"waiting": "no answer has begun", "complete": "the answer was complete"}
            raise UnexpectedMessageError(
                f"{kind} after {where.get(self.answer, 'the answer began')}")
        return moved


# What the driver does, in the order given
@dataclass(frozen=True, slots=True)
class Write:
    data: bytes


@dataclass(frozen=True, slots=True)
class StartExchange:
    """Call the app for this request (its body follows as :class:`RequestBody`)."""

    exchange: Exchange


@dataclass(frozen=True, slots=True)
class RequestBody:
    """The next part of the current request's body, for the app (``http.request``)."""

    body: bytes
    more_body: bool


@dataclass(frozen=True, slots=True)
class ExchangeEnded:
    """The connection is done with this exchange: its app hears ``http.disconnect``."""

    exchange: Exchange


@dataclass(frozen=True, slots=True)
class WaitForAnswer:
    """Read nothing more until the current answer is complete (a pipelined request is
    here), then call :meth:`ServerConnection.resume`."""


@dataclass(frozen=True, slots=True)
class AnswerThenClose:
    """The client closed its side after a whole request: its answer is still written (for
    as long as a connection that stayed open would wait), then the connection closes."""

    exchange: Exchange


@dataclass(frozen=True, slots=True)
class Idle:
    """Between requests: the keep-alive wait runs."""


@dataclass(frozen=True, slots=True)
class Refused:
    """A request refused before its app sees it (for the log); its answer and the close
    follow as :class:`Write` and :class:`Close`."""

    refusal: Refusal
    correlation_id: str | None


@dataclass(frozen=True, slots=True)
class Close:
    """Close the connection: nothing more is read or written."""


# the actions without fields, made once
WAIT_FOR_ANSWER, IDLE, CLOSE = WaitForAnswer(), Idle(), Close()
Action = (Write | StartExchange | RequestBody | ExchangeEnded | WaitForAnswer
          | AnswerThenClose | Idle | Refused | Close)


@dataclass(frozen=True, slots=True)
class ConnectionRules:
    """What a connection's HTTP/1.1 allows, and what every answer carries."""

    head_limits: HeadLimits
    answer_refusal: AnswerRefusal
    max_requests: int  # on one connection; the last answer says ``Connection: close``
    answer_headers: Callable[[], Headers] = list  # date, server
    max_incomplete_bytes: int = 64 * 1024  # h11's bound, behind the head limits


@dataclass
class ServerConnection:
    """One client connection's HTTP/1.1, as actions."""

    rules: ConnectionRules
    closed: bool = False
    requests: int = 0
    exchange: Exchange | None = None  # the request being read or answered
    paused: bool = False  # a pipelined request waits for the current answer
    _h11: h11.Connection = field(init=False)
    _head: HeadScanner = field(init=False)

    def __post_init__(self) -> None:
        self._h11 = h11.Connection(h11.SERVER,
                                   max_incomplete_event_size=self.rules.max_incomplete_bytes)
        self._head = HeadScanner(self.rules.head_limits)

    # -- the client's side ---------------------------------------------------------------

    def receive(self, data: bytes) -> list[Action]:
        """The client's next bytes; ``b""`` when it has closed its sending side."""
        if self.closed:
            return []
        if self._h11.their_state is h11.IDLE:  # a head, not yet parsed
            refusal = self._head.feed(data)
            if refusal is not None:
                return self._refuse(refusal)
        self._h11.receive_data(data)
        actions = self._events()
        if (not data and not self.closed and self.exchange is not None
                and self._h11.their_state is h11.CLOSED):
            actions.append(AnswerThenClose(self.exchange))
        return actions

    def resume(self) -> list[Action]:
        """After :class:`WaitForAnswer`, once the answer is complete: the requests read."""
        if self.closed or not self.paused:
            return []
        self.paused = False
        return self._events()

    def connection_lost(self) -> list[Action]:
        """The connection is gone (either side closed it, or a deadline passed)."""
        self.closed = True
        return self._end_exchange()

    def _events(self) -> list[Action]:
        actions: list[Action] = []
        while not self.closed:
            if self._h11.they_are_waiting_for_100_continue:
                actions.append(Write(self._h11_bytes([h11.InformationalResponse(
                    status_code=100, headers=self.rules.answer_headers())])))
            try:
                event = self._h11.next_event()
            except h11.RemoteProtocolError as error:
                return actions + self._refuse(malformed(error))
            if isinstance(event, h11.Request):
                refusal = framing_refusal(event)
                if refusal is not None:
                    return actions + self._refuse(refusal)
                self.requests += 1
                self.exchange = Exchange(event, self.requests,
                                         silent=event.method == b"HEAD")
                actions.append(StartExchange(self.exchange))
            elif event is h11.PAUSED:
                self.paused = True
                actions.append(WAIT_FOR_ANSWER)
                break
            elif (isinstance(event, h11.ConnectionClosed) or event is h11.NEED_DATA
                  or self.exchange is None):
                break
            elif isinstance(event, h11.Data):
                actions.append(RequestBody(bytes(event.data), more_body=True))
            elif isinstance(event, h11.EndOfMessage):
                actions.append(RequestBody(b"", more_body=False))
        return actions

    # -- the app's side ------------------------------------------------------------------

    def start_answer(self, exchange: Exchange, status: int, headers: Headers) -> None:
        """The answer's status line and headers, held until its first body. A header h11
        refuses raises ``h11.LocalProtocolError``, as a failure of the app."""
        moved = exchange.after("start")
        headers = [*headers, *self.rules.answer_headers()]
        if exchange.number >= self.rules.max_requests:
            headers.append((b"connection", b"close"))
        exchange.held_head = h11.Response(status_code=status, headers=headers)
        exchange.answer = moved
        exchange.silent = exchange.silent or status in BODILESS_STATUSES

    def send_body(self, exchange: Exchange, body: bytes, more_body: bool, *,
                  reuse: bool = True) -> list[Action]:
        """Part of the answer's body; the last part completes it, and then the connection
        takes its next request (unless ``reuse`` is false: the server is stopping)."""
        moved = exchange.after("body" if more_body else "last")
        if exchange is not self.exchange:
            exchange.answer = moved
            return []  # its connection is gone
        events: list[Any] = []
        if exchange.held_head is not None:
            events.append(exchange.held_head)
            exchange.held_head = None
        if body and not exchange.silent:
            events.append(h11.Data(data=body))
        if not more_body:
            events.append(h11.EndOfMessage())
        # h11 refuses more body than the app declared: the answer stays incomplete and the
        # connection closes when the app ends
        actions: list[Action] = [Write(self._h11_bytes(events))]
        exchange.answer = moved
        if not more_body:
            actions += self._next_request(reuse)
        return actions

    def app_ended(self, exchange: Exchange) -> list[Action]:
        """The app returned or failed: an answer it did not finish ends the connection (a
        500 if it never began one, otherwise what it began)."""
        if exchange.answer == "complete" or exchange is not self.exchange:
            return []
        if exchange.answer == "waiting":
            data = self.error_response(500)
        else:
            data = self._h11_bytes([exchange.held_head] if exchange.held_head else [])
        exchange.answer, exchange.held_head = "complete", None
        return [Write(data), *self._end_exchange(), *self._close()]

    # -- the connection's own answers ----------------------------------------------------

    def error_response(self, status: int, answer: RefusalAnswer = NO_BODY) -> bytes:
        """An answer that closes the connection (a refused request, a failed app)."""
        headers = [*answer.headers, (b"content-length", b"%d" % len(answer.body)),
                   (b"connection", b"close"), *self.rules.answer_headers()]
        body = [h11.Data(data=answer.body)] if answer.body else []
        return self._h11_bytes([h11.Response(status_code=status, headers=headers), *body,
                                h11.EndOfMessage()])

    def _refuse(self, refusal: Refusal) -> list[Action]:
        answer = self.rules.answer_refusal(refusal)
        actions: list[Action] = [Refused(refusal, answer.correlation_id)]
        if self._h11.our_state in {h11.IDLE, h11.SEND_RESPONSE}:
            actions.append(Write(self.error_response(refusal.status, answer)))
        return actions + self._close()

    def _next_request(self, reuse: bool) -> list[Action]:
        """The answer is written: take the next request (its head, if some has come, within
        the limits), or close."""
        actions = self._end_exchange()
        if not (reuse and self._h11.our_state is h11.DONE
                and self._h11.their_state is h11.DONE):
            return actions + self._close()
        try:
            self._h11.start_next_cycle()
        except h11.LocalProtocolError:
            return actions + self._close()
        self._head.restart()
        refusal = self._head.feed(self._h11.trailing_data[0])
        return actions + ([IDLE] if refusal is None else self._refuse(refusal))

    def _end_exchange(self) -> list[Action]:
        exchange, self.exchange = self.exchange, None
        return [] if exchange is None else [ExchangeEnded(exchange)]

    def _close(self) -> list[Action]:
        self.closed = True
        return [CLOSE]

    def _h11_bytes(self, events: Iterable[Any]) -> bytes:
        """What h11 writes for ``events``; nothing for a connection it already gave up."""
        written = []
        for event in events:
            try:
                data = self._h11.send(event)
            except h11.LocalProtocolError:
                if self._h11.their_state is not h11.ERROR:
                    raise
            else:
                if data:
                    written.append(data)
        return b"".join(written)
