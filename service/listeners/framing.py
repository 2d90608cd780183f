"""Which requests omgate reads at all: every rule on a request's head and framing, here.

A request head is checked twice, and whatever breaks a rule is refused and its connection
closed, never reused:

- its raw bytes, as they arrive and before h11 parses them (the CPU a head costs goes
  into parsing it, in h11 and then in the app, line by line): at most
  ``server.max_header_count`` header lines, each at most :data:`MAX_HEADER_LINE_BYTES`
  with its line end (the configured forwarded-certificate headers excepted, since a
  balancer may put a whole chain in one), the whole head at most :data:`MAX_HEAD_BYTES`;
  431 otherwise (:class:`HeadScanner`);
- the request h11 parsed: one framing, which every proxy in front reads the same way
  (RFC 9112 section 6.1): no ``Content-Length`` beside ``Transfer-Encoding``, no
  ``Transfer-Encoding`` on HTTP/1.0; 400 otherwise (:func:`framing_refusal`). h11 itself
  refuses the rest (a malformed line, two different lengths, a coding other than chunked).

What a refusal looks like to the client is the listener's choice (:data:`AnswerRefusal`):
a SOAP fault on the message listeners, no body elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import h11

from service.config import DEFAULT_MAX_HEADER_COUNT
from service.text import clipped

MAX_HEAD_BYTES = 64 * 1024  # request line and header lines: room for a forwarded chain
MAX_HEADER_LINE_BYTES = 8 * 1024  # one header line with its CRLF, as nginx and Apache allow
NAME_BYTES = 256  # of a line kept while it arrives, to read its header name

RefusalReason = Literal["malformed_request", "head_too_large", "too_many_headers",
                        "header_too_large", "content_length_with_transfer_encoding",
                        "transfer_encoding_in_http10"]


@dataclass(frozen=True)
class Refusal:
    """A request refused before the app sees it; ``message`` is for the client and the log."""

    reason: RefusalReason
    status: int
    message: str
    limit: int | None = None


@dataclass(frozen=True)
class RefusalAnswer:
    """What a refusal's answer carries besides its status (content-length and
    ``Connection: close`` are added): none, or a document and its correlation id."""

    headers: tuple[tuple[bytes, bytes], ...] = ()
    body: bytes = b""
    correlation_id: str | None = None


AnswerRefusal = Callable[[Refusal], RefusalAnswer]
NO_BODY = RefusalAnswer()


def bodiless(_refusal: Refusal) -> RefusalAnswer:
    return NO_BODY


@dataclass(frozen=True)
class HeadLimits:
    max_header_count: int = DEFAULT_MAX_HEADER_COUNT
    max_line_bytes: int = MAX_HEADER_LINE_BYTES
    max_head_bytes: int = MAX_HEAD_BYTES
    long_headers: frozenset[bytes] = frozenset()  # lower-case names bounded by the head only


DEFAULT_LIMITS = HeadLimits()


class HeadScanner:
    """Counts and measures one request head's lines as its bytes arrive, keeping none of
    them but the start of the current line (its header name). A line ends at LF, as h11
    reads it; the empty line ends the head, and what follows is not looked at.

    Written here because h11 bounds only a head's size: it parses every line of a complete
    head before anything can count them."""

    def __init__(self, limits: HeadLimits) -> None:
        self.limits = limits
        self.restart()

    def restart(self) -> None:
        """A new head begins (a new connection, or the next request on this one)."""
        self.size = 0  # bytes of the head so far
        self.lines = 0  # lines ended, the request line included
        self.line = 0  # bytes of the current line so far, without its LF
        self.start = b""  # its first NAME_BYTES
        self.complete = False

    def feed(self, data: bytes) -> Refusal | None:
        """The head's next bytes: a refusal as soon as a limit is passed, None otherwise (and
        once the head is complete)."""
        position = 0
        while not self.complete and position < len(data):
            newline = data.find(b"\n", position)
            end = len(data) if newline == -1 else newline
            if len(self.start) < NAME_BYTES:
                self.start += data[position:min(end, position + NAME_BYTES - len(self.start))]
            self.line += end - position
            self.size += end - position
            refusal = self._line_refusal()
            if refusal is not None or newline == -1:
                return refusal
            refusal = self._end_line()
            if refusal is not None:
                return refusal
            position = newline + 1
        return None

    def _line_refusal(self) -> Refusal | None:
        """The head, or the line under way, past its limit (the request line is bounded by
        the head only)."""
        limits = self.limits
        if self.size > limits.max_head_bytes:
            return Refusal("head_too_large", 431, f"The request head is longer than "
                           f"{limits.max_head_bytes} bytes.", limits.max_head_bytes)
        if self.lines and self.line >= limits.max_line_bytes and not self._long_header():
            return Refusal("header_too_large", 431, f"A header line is longer than "
                           f"{limits.max_line_bytes} bytes.", limits.max_line_bytes)
        return None

    def _end_line(self) -> Refusal | None:
        """The line under way ended (at its LF): the head is complete, or one more line."""
        self.size += 1
        if self.start in (b"", b"\r"):
            self.complete = True
            return self._line_refusal()
        self.lines += 1
        self.line, self.start = 0, b""
        if self.lines - 1 > self.limits.max_header_count:
            return Refusal("too_many_headers", 431, f"The request has more than "
                           f"{self.limits.max_header_count} header lines "
                           "(server.max_header_count).", self.limits.max_header_count)
        return self._line_refusal()

    def _long_header(self) -> bool:
        name, colon, _value = self.start.partition(b":")
        return bool(colon) and name.strip().lower() in self.limits.long_headers


def framing_refusal(request: h11.Request) -> Refusal | None:
    """A request whose body's framing a proxy in front could read otherwise than omgate
    (RFC 9112 section 6.1): its bytes after what omgate reads as its body would be a request
    the proxy never saw, with whatever forwarded headers the sender wrote."""
    names = {name for name, _value in request.headers}
    if b"transfer-encoding" not in names:
        return None
    if b"content-length" in names:
        return Refusal("content_length_with_transfer_encoding", 400,
                       "The request has both Content-Length and Transfer-Encoding.")
    if request.http_version == b"1.0":
        return Refusal("transfer_encoding_in_http10", 400,
                       "An HTTP/1.0 request cannot have a Transfer-Encoding.")
    return None


def malformed(error: h11.RemoteProtocolError) -> Refusal:
    """What h11 refused (its status: 400, 431 for a head past its own limit, 501)."""
    return Refusal("malformed_request", error.error_status_hint,
                   f"The request is not valid HTTP/1.1: {clipped(str(error))}.")
