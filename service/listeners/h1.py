"""One HTTP/1.1 server connection without I/O: bytes in, actions out.

Every rule on what omgate reads and writes on a connection is decided here, in the style
of h11's ``_connection.py``: :meth:`ServerConnection.receive` takes the bytes the client
sent (``b""`` when it closed its side) and the app's answer goes in through
:meth:`~ServerConnection.start_answer` and :meth:`~ServerConnection.send_body`; each
returns the :data:`Action` list the driver carries out in order (write these bytes, start
this exchange, hand the app this body, wait, close). Nothing here reads a clock, a socket
or a task: the driver (:mod:`service.listeners.connection`) does, and the tests in
tests/unit/test_h1.py hold every rule bytes in, bytes out.

Requests are read one at a time: :class:`~service.listeners.framing.HeadScanner` bounds a
head as it arrives and finds its end, llhttp (httptools) parses the whole head and a
chunked body, and the rules llhttp does not keep are omgate's own
(:mod:`service.listeners.framing`); a ``Content-Length`` body is counted here. Nothing
past the current request is parsed before its answer is complete (pipelining), so each
head is bounded before it is parsed. Answers are written here (:func:`plan_answer`), with
h11's rules: header names and values checked, the body framed by its length or chunked
(or, to HTTP/1.0, by the close), never more than its declared length, no body for HEAD,
204 and 304. A refusal is answered (unless an answer has begun) and closes the connection.

The state of an exchange's answer is one value, moved only by :data:`ANSWER_MOVES`::

    waiting --start--> head_held --body--> streaming --body--> streaming
                                  \\--last--> complete  <--last--/

The head of an answer is held until its first body (as the ASGI spec allows), so that a
whole answer leaves in one write.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from typing import Literal

from httptools import HttpParserError, HttpRequestParser

from service.listeners.framing import (
    MAX_HEAD_BYTES,
    NO_BODY,
    TOKEN,
    AnswerRefusal,
    HeaderFields,
    HeadLimits,
    HeadScanner,
    Refusal,
    RefusalAnswer,
    RequestHead,
    comma_values,
    malformed,
    read_head,
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
ReadPhase = Literal["head", "body", "done"]  # of the request being read
# How an answer's body is delimited: its Content-Length, chunks, the connection's close
# (to HTTP/1.0 without a length), or not at all (it has none)
BodyFraming = Literal["length", "chunked", "close", "none"]

# h11's rules for the headers it writes (h11/_abnf.py): a name is a TOKEN; a value has no
# NUL and no whitespace but single spaces and tabs between its visible parts
FIELD_VALUE = re.compile(rb"(?:[^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?")
CONTENT_LENGTH = re.compile(rb"[0-9]{1,20}")
REASONS = {status.value: status.phrase.encode() for status in HTTPStatus}


class UnexpectedMessageError(Exception):
    """The app sent an ASGI message an HTTP/1.1 answer cannot hold at this point."""


class InvalidAnswerError(Exception):
    """The app's answer cannot be written as it is (a header that is not HTTP, a status
    out of range, a body longer or shorter than its Content-Length): a failure of the app,
    as h11's ``LocalProtocolError`` was."""


@dataclass(frozen=True, slots=True)
class AnswerHead:
    """An answer's status line and headers as written, and how its body is framed."""

    status: int
    headers: HeaderFields
    framing: BodyFraming
    length: int  # of a "length" body
    keep_alive: bool  # the connection takes another request after it

    def encode(self) -> bytes:
        return encode_head(self.status, self.headers)


@dataclass(eq=False)
class Exchange:
    """One request on the connection and the state of its answer. Identity matters: an
    exchange the connection has ended (answered, or its client gone) takes no more bytes."""

    request: RequestHead
    number: int
    answer: AnswerState = "waiting"
    held_head: bytes | None = None
    silent: bool = False  # a HEAD request, or a status without a body
    keep_alive: bool = True  # the request's, then the answer's
    planned: AnswerHead | None = None
    remaining: int = 0  # of a "length" body still to write

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
    max_incomplete_bytes: int = 64 * 1024  # bounds a head too, with the head limits


# -- a request's body ------------------------------------------------------------------------

class LengthBody:
    """A body of ``Content-Length`` bytes (none without the header): counted, not parsed."""

    def __init__(self, length: int) -> None:
        self.remaining = length

    def take(self, data: bytes) -> tuple[bytes, bytes | None]:
        """The body's bytes in ``data``, and what follows the body once it is whole."""
        part = data[:self.remaining]
        self.remaining -= len(part)
        return part, (data[len(part):] if not self.remaining else None)


# What llhttp is given before a chunked body, so that it parses the body alone
CHUNKED_HEAD = b"POST / HTTP/1.1\r\nHost: omgate\r\nTransfer-Encoding: chunked\r\n\r\n"
END_OF_CHUNKED = b"\r\n\r\n"  # a chunked body, trailers or not, ends in it (CRLF strict)


# The chunk-size lines, extensions and trailers a chunked body may carry beyond as many
# bytes as its content: its framing costs a Python call per chunk and llhttp applies no
# limit of its own to extensions or trailers (a whole head's worth of trailers fits).
FRAMING_ALLOWANCE = MAX_HEAD_BYTES


class ChunkFramingError(ValueError):
    """A chunked body whose framing outweighs its content (see FRAMING_ALLOWANCE)."""


class ChunkedBody:
    """A chunked body, parsed by llhttp. llhttp reads on past the end of a message and
    cannot be paused there, so it is given the body up to each ``CRLF CRLF`` at a time:
    where it says the body ended, that is where it did. Trailers are parsed, not kept."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.complete = False
        self._content = self._framing = 0  # bytes of the body so far
        self._tail = b""  # the last bytes given, for an end cut between reads
        self._parser = HttpRequestParser(self)
        self._parser.feed_data(CHUNKED_HEAD)

    def on_body(self, body: bytes) -> None:
        self.parts.append(body)

    def on_message_complete(self) -> None:
        self.complete = True

    def take(self, data: bytes) -> tuple[bytes, bytes | None]:
        """As :meth:`LengthBody.take`, the chunks of ``data`` joined; raises
        ``HttpParserError`` for a malformed body, ``ChunkFramingError`` for one whose
        framing outweighs its content."""
        seen = self._tail + data
        start = search = 0
        while not self.complete and start < len(data):
            found = seen.find(END_OF_CHUNKED, search)
            end = len(data) if found == -1 else found + len(END_OF_CHUNKED) - len(self._tail)
            self._parser.feed_data(data[start:end])
            start, search = end, found + 1
        self._tail = seen[-len(END_OF_CHUNKED) + 1:]
        parts, self.parts = self.parts, []
        content = b"".join(parts)
        self._count(start, len(content))
        return content, (data[start:] if self.complete else None)

    def _count(self, read: int, content: int) -> None:
        self._content += content
        self._framing += read - content
        if self._framing > FRAMING_ALLOWANCE + self._content:
            raise ChunkFramingError(
                f"its framing (chunk sizes, extensions, trailers) took {self._framing} bytes "
                f"for {self._content} bytes of content, more than {FRAMING_ALLOWANCE} beyond "
                "them")


RequestBodyReader = LengthBody | ChunkedBody


def body_reader(request: RequestHead) -> RequestBodyReader:
    """How the request's body is read (its framing was checked in :func:`read_head`)."""
    if any(name == b"transfer-encoding" for name, _value in request.headers):
        return ChunkedBody()
    lengths = [value for name, value in request.headers if name == b"content-length"]
    return LengthBody(int(lengths[0]) if lengths else 0)


def request_keep_alive(request: RequestHead) -> bool:
    """h11's rule: HTTP/1.1 without ``Connection: close`` (HTTP/1.0 never)."""
    return (request.http_version == b"1.1"
            and b"close" not in comma_values(request.headers, b"connection"))


def expects_100_continue(request: RequestHead) -> bool:
    return (request.http_version == b"1.1"
            and b"100-continue" in comma_values(request.headers, b"expect"))


# -- an answer's head and body ---------------------------------------------------------------

def encode_head(status: int, headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    lines = b"".join([b"%s: %s\r\n" % (name, value) for name, value in headers])
    return b"HTTP/1.1 %d %s\r\n%s\r\n" % (status, REASONS.get(status, b""), lines)


@dataclass(frozen=True, slots=True)
class CheckedHeaders:
    """An answer's headers as h11 checks them: lower-case names, one Content-Length."""

    headers: HeaderFields
    length: int | None
    chunked: bool


def check_headers(headers: Headers) -> CheckedHeaders:
    """The app's headers, or :class:`InvalidAnswerError` where h11 refused them."""
    checked: list[tuple[bytes, bytes]] = []
    length: bytes | None = None
    chunked = False
    for raw_name, value in headers:
        if not TOKEN.fullmatch(raw_name) or not FIELD_VALUE.fullmatch(value):
            raise InvalidAnswerError(f"illegal header {raw_name!r}: {value!r}")
        name = raw_name.lower()
        if name == b"content-length":
            lengths = {part.strip() for part in value.split(b",")}
            value = lengths.pop() if len(lengths) == 1 else b""
            if not CONTENT_LENGTH.fullmatch(value) or length not in (None, value):
                raise InvalidAnswerError("bad or conflicting Content-Length")
            if length is not None:
                continue
            length = value
        elif name == b"transfer-encoding":
            value = value.lower()
            if chunked or value != b"chunked":
                raise InvalidAnswerError("the only Transfer-Encoding written is chunked")
            chunked = True
        checked.append((name, value))
    return CheckedHeaders(tuple(checked), None if length is None else int(length), chunked)


def without(headers: HeaderFields, *names: bytes) -> HeaderFields:
    return tuple((name, value) for name, value in headers if name not in names)


def plan_answer(request: RequestHead, status: int, headers: Headers, *, silent: bool,
                keep_alive: bool) -> AnswerHead:
    """An answer's head as h11 wrote it: a body of unknown length is chunked to HTTP/1.1
    and delimited by the close to HTTP/1.0; an answer after which the connection closes
    says ``Connection: close``."""
    if not 200 <= status < 1000:
        raise InvalidAnswerError(f"an answer's status is 200 to 999, not {status}")
    checked = check_headers(headers)
    written = checked.headers
    framing: BodyFraming = "length"
    # a body of unknown length (the headers of a HEAD answer are those of a GET's)
    if (checked.chunked or checked.length is None) and status not in BODILESS_STATUSES:
        written = without(written, b"content-length", b"transfer-encoding")
        if request.http_version == b"1.1":
            written, framing = (*written, (b"transfer-encoding", b"chunked")), "chunked"
        else:  # no HTTP/1.0 connection is kept alive (h11's rule): the close ends it
            framing = "close"
    keep_alive = keep_alive and b"close" not in comma_values(written, b"connection")
    if not keep_alive:
        tokens = {*comma_values(written, b"connection"), b"close"} - {b"keep-alive"}
        written = (*without(written, b"connection"), (b"connection", b", ".join(sorted(tokens))))
    return AnswerHead(status, written, "none" if silent else framing,
                      checked.length or 0, keep_alive)


CHUNKED_END = b"0\r\n\r\n"


def frame_body(exchange: Exchange, body: bytes, last: bool) -> bytes:
    """What is written for this part of the answer's body."""
    framing = "none" if exchange.planned is None else exchange.planned.framing
    if framing == "length":
        if len(body) > exchange.remaining:
            raise InvalidAnswerError("more body than its Content-Length")
        exchange.remaining -= len(body)
        if last and exchange.remaining:
            raise InvalidAnswerError("less body than its Content-Length")
        return body
    if framing == "chunked":
        chunk = b"%x\r\n%s\r\n" % (len(body), body) if body else b""
        return chunk + CHUNKED_END if last else chunk
    return body if framing == "close" else b""


@dataclass
class ServerConnection:
    """One client connection's HTTP/1.1, as actions."""

    rules: ConnectionRules
    closed: bool = False
    requests: int = 0
    exchange: Exchange | None = None  # the request being read or answered
    paused: bool = False  # a pipelined request waits for the current answer
    _head: HeadScanner = field(init=False)
    _phase: ReadPhase = field(init=False, default="head")
    _head_parts: list[bytes] = field(init=False, default_factory=list)
    _unread: bytes = field(init=False, default=b"")  # past the head (or request) read
    _body: RequestBodyReader = field(init=False, default_factory=lambda: LengthBody(0))
    _eof: bool = field(init=False, default=False)  # the client closed its side

    def __post_init__(self) -> None:
        limits = self.rules.head_limits
        self._head = HeadScanner(replace(limits, max_head_bytes=min(
            limits.max_head_bytes, self.rules.max_incomplete_bytes)))

    # -- the client's side ---------------------------------------------------------------

    def receive(self, data: bytes) -> list[Action]:
        """The client's next bytes; ``b""`` when it has closed its sending side."""
        if self.closed:
            return []
        if not data:
            self._eof = True
        elif self._phase == "head" and not self._head.complete:
            refusal = self._scan(data)
            if refusal is not None:
                return self._refuse(refusal)
        else:
            self._unread += data
        actions = self._events()
        if (not data and not self.closed and self.exchange is not None
                and self._phase == "done" and not self._unread):
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

    def _scan(self, data: bytes) -> Refusal | None:
        """A head's next bytes, bounded as they come; what follows a whole head is kept."""
        refusal = self._head.feed(data)
        if refusal is None and self._head.complete:
            self._head_parts.append(data[:self._head.end])
            self._unread = data[self._head.end:]
        else:
            self._head_parts.append(data)
        return refusal

    def _events(self) -> list[Action]:
        actions: list[Action] = []
        while not self.closed:
            if self._phase == "head":
                if not self._head.complete:
                    if self._eof and self._head.size:
                        actions += self._refuse(malformed("the client closed it mid-head"))
                    break
                actions += self._start_request()
            elif self._phase == "body":
                if not self._unread:
                    if self._eof:
                        actions += self._refuse(malformed("the client closed it mid-body"))
                    break
                actions += self._read_body()
            else:
                actions += self._after_request()
                break
        return actions

    def _start_request(self) -> list[Action]:
        head = b"".join(self._head_parts)
        self._head_parts = []
        request = read_head(head)
        if isinstance(request, Refusal):
            return self._refuse(request)
        self.requests += 1
        self.exchange = Exchange(request, self.requests, silent=request.method == b"HEAD",
                                 keep_alive=request_keep_alive(request))
        actions: list[Action] = [StartExchange(self.exchange)]
        if expects_100_continue(request):
            actions.append(Write(encode_head(100, self.rules.answer_headers())))
        self._body, self._phase = body_reader(request), "body"
        if isinstance(self._body, LengthBody) and not self._body.remaining:
            actions += self._request_read(self._unread)
        return actions

    def _read_body(self) -> list[Action]:
        data, self._unread = self._unread, b""
        try:
            content, rest = self._body.take(data)
        except (HttpParserError, ChunkFramingError) as error:
            return self._refuse(malformed(f"its chunked body: {error}"))
        actions: list[Action] = [RequestBody(content, more_body=True)] if content else []
        return actions if rest is None else actions + self._request_read(rest)

    def _request_read(self, rest: bytes) -> list[Action]:
        self._unread, self._phase = rest, "done"
        return [RequestBody(b"", more_body=False)]

    def _after_request(self) -> list[Action]:
        """The request is whole: bytes after it wait for its answer, unless the request
        closes the connection (h11 refused them: nothing may follow it)."""
        if not self._unread:
            return []
        if self.exchange is not None and not request_keep_alive(self.exchange.request):
            return self._refuse(malformed("bytes after a request that closes the connection"))
        self.paused = True
        return [WAIT_FOR_ANSWER]

    # -- the app's side ------------------------------------------------------------------

    def start_answer(self, exchange: Exchange, status: int, headers: Headers, *,
                     last: bool = False) -> None:
        """The answer's status line and headers, held until its first body; ``last``: the
        connection closes after it (the server is stopping), and it says so. A header that
        is not HTTP raises :class:`InvalidAnswerError`, as a failure of the app."""
        moved = exchange.after("start")
        headers = [*headers, *self.rules.answer_headers()]
        if exchange.number >= self.rules.max_requests:
            headers.append((b"connection", b"close"))
        silent = exchange.silent or status in BODILESS_STATUSES
        planned = plan_answer(exchange.request, status, headers, silent=silent,
                              keep_alive=exchange.keep_alive and not last)
        exchange.planned, exchange.held_head = planned, planned.encode()
        exchange.remaining, exchange.keep_alive = planned.length, planned.keep_alive
        exchange.answer, exchange.silent = moved, silent

    def send_body(self, exchange: Exchange, body: bytes, more_body: bool, *,
                  reuse: bool = True) -> list[Action]:
        """Part of the answer's body; the last part completes it, and then the connection
        takes its next request (unless ``reuse`` is false: the server is stopping)."""
        moved = exchange.after("body" if more_body else "last")
        if exchange is not self.exchange:
            exchange.answer = moved
            return []  # its connection is gone
        head, exchange.held_head = exchange.held_head or b"", None
        # more body than declared raises: the answer stays incomplete (its head unwritten)
        # and the connection closes when the app ends
        data = b"" if self.closed else head + frame_body(exchange, body, not more_body)
        exchange.answer = moved
        actions: list[Action] = [Write(data)]
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
            data = exchange.held_head or b""
        exchange.answer, exchange.held_head = "complete", None
        return [Write(b"" if self.closed else data), *self._end_exchange(), *self._close()]

    # -- the connection's own answers ----------------------------------------------------

    def error_response(self, status: int, answer: RefusalAnswer = NO_BODY) -> bytes:
        """An answer that closes the connection (a refused request, a failed app)."""
        headers = [*answer.headers, (b"content-length", b"%d" % len(answer.body)),
                   (b"connection", b"close"), *self.rules.answer_headers()]
        return encode_head(status, headers) + answer.body

    def _refuse(self, refusal: Refusal) -> list[Action]:
        answer = self.rules.answer_refusal(refusal)
        actions: list[Action] = [Refused(refusal, answer.correlation_id)]
        if self.exchange is None or self.exchange.answer in ("waiting", "head_held"):
            actions.append(Write(self.error_response(refusal.status, answer)))
        return actions + self._close()

    def _next_request(self, reuse: bool) -> list[Action]:
        """The answer is written: take the next request (its head, if some has come, within
        the limits), or close."""
        exchange = self.exchange
        actions = self._end_exchange()
        if not (reuse and self._phase == "done" and exchange is not None
                and exchange.keep_alive and not (self._eof and not self._unread)):
            return actions + self._close()
        self._phase = "head"
        self._head.restart()
        data, self._unread = self._unread, b""
        refusal = self._scan(data) if data else None
        return actions + ([IDLE] if refusal is None else self._refuse(refusal))

    def _end_exchange(self) -> list[Action]:
        exchange, self.exchange = self.exchange, None
        return [] if exchange is None else [ExchangeEnded(exchange)]

    def _close(self) -> list[Action]:
        self.closed = True
        return [CLOSE]
