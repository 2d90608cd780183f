"""Which requests omgate reads at all: every rule on a request's head and framing, here.

A request head is checked twice, and whatever breaks a rule is refused and its connection
closed, never reused:

- its raw bytes, as they arrive and before llhttp parses them (the CPU a head costs goes
  into parsing it, in llhttp and then in the app, line by line): at most
  ``server.max_header_count`` header lines, each at most :data:`MAX_HEADER_LINE_BYTES`
  with its line end (the configured forwarded-certificate headers excepted, since a
  balancer may put a whole chain in one), the whole head at most :data:`MAX_HEAD_BYTES`;
  431 otherwise (:class:`HeadScanner`);
- the whole head, parsed by llhttp (through httptools, its lenient flags off) in
  :func:`read_head`. llhttp refuses a malformed header line (an invalid name, a bare CR,
  a control character in a value, obs-fold), a bad or repeated ``Content-Length``, a
  ``Transfer-Encoding`` that does not end in chunked, and methods it does not know. What
  it lets through and h11 refused, omgate refuses itself: a request line that is not
  exactly ``method SP target SP HTTP/1.0|1.1`` (llhttp takes two spaces, no version,
  HTTP/0.9 and 2.0, leading empty lines), a missing or repeated ``Host`` on HTTP/1.1,
  and a transfer coding other than one ``chunked`` (501). Then one framing, which every
  proxy in front reads the same way (RFC 9112 section 6.1): no ``Content-Length`` beside
  ``Transfer-Encoding``, no ``Transfer-Encoding`` on HTTP/1.0; 400 otherwise
  (:func:`framing_refusal`).

What a refusal looks like to the client is the listener's choice (:data:`AnswerRefusal`):
a SOAP fault on the message listeners, no body elsewhere.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from httptools import HttpParserError, HttpParserUpgrade, HttpRequestParser

from service.config import DEFAULT_MAX_HEADER_COUNT
from service.text import clipped

MAX_HEAD_BYTES = 64 * 1024  # request line and header lines: room for a forwarded chain
MAX_HEADER_LINE_BYTES = 8 * 1024  # one header line with its CRLF, as nginx and Apache allow
NAME_BYTES = 256  # of a line kept while it arrives, to read its header name

RefusalReason = Literal["malformed_request", "head_too_large", "too_many_headers",
                        "header_too_large", "content_length_with_transfer_encoding",
                        "transfer_encoding_in_http10"]
RefusalStatus = Literal[400, 431, 501]
HttpVersion = Literal[b"1.0", b"1.1"]
HeaderFields = tuple[tuple[bytes, bytes], ...]

# RFC 9112 section 3: method (a token), one space, a target of visible ASCII, one space,
# the version (the ones omgate serves), CRLF
TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+")  # RFC 9110 section 5.6.2
# RFC 9112 section 3.2: Host = uri-host [ ":" port ], uri-host as RFC 3986 section 3.2.2
# spells it (an IP literal in brackets, or a reg-name, which may be empty).
HOST = re.compile(rb"(?:\[[0-9A-Za-z._~!$&'()*+,;=:-]+\]|(?:[0-9A-Za-z._~!$&'()*+,;=-]"
                  rb"|%[0-9A-Fa-f]{2})*)(?::[0-9]*)?")
REQUEST_LINE = re.compile(rb"(" + TOKEN.pattern + rb") ([\x21-\x7e]+) HTTP/(1\.[01])\r\n")
OWS = b" \t"


@dataclass(frozen=True, slots=True)
class RequestHead:
    """A request's line and headers as read: the method as sent, header names lower-case
    and values without the whitespace around them, in the order sent."""

    method: bytes
    target: bytes
    http_version: HttpVersion
    headers: HeaderFields


@dataclass(frozen=True)
class Refusal:
    """A request refused before the app sees it; ``message`` is for the client and the log."""

    reason: RefusalReason
    status: RefusalStatus
    message: str
    limit: int | None = None


@dataclass(frozen=True)
class RefusalAnswer:
    """What a refusal's answer carries besides its status (content-length and
    ``Connection: close`` are added): none, or a document and its correlation id."""

    headers: HeaderFields = ()
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
    them but the start of the current line (its header name). A line ends at LF; the
    empty line ends the head (``end`` is then where, in the last bytes fed), and what
    follows is not looked at.

    Written here because a parser bounds only a head's size, if anything: it parses every
    line of a complete head before anything can count them."""

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
        self.end = 0  # once complete: the head's end in the last bytes fed

    def feed(self, data: bytes) -> Refusal | None:
        """The head's next bytes: a refusal as soon as a limit is passed, None otherwise (and
        once the head is complete)."""
        if not self.size and self._whole_head_within_limits(data):
            return None
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
            position = self.end = newline + 1
            refusal = self._end_line()
            if refusal is not None:
                return refusal
        return None

    def _whole_head_within_limits(self, data: bytes) -> bool:
        """A whole head in the first bytes, within every limit (the usual case), measured
        at once; anything else is read line by line, which says which limit it passes."""
        if data[:1] in (b"\r", b"\n"):
            return False
        end = data.find(b"\n\r\n")  # the LF of the last header line
        if end == -1 or data.find(b"\n\n", 0, end + 1) != -1:
            return False
        lines = data[:end].split(b"\n")  # the request line and header lines, without LF
        limits = self.limits
        if (end + 3 > limits.max_head_bytes or len(lines) - 1 > limits.max_header_count
                or max(map(len, lines[1:]), default=0) >= limits.max_line_bytes):
            return False
        self.size = self.end = end + 3
        self.lines, self.complete = len(lines), True
        return True

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


class _HeaderReader:
    """httptools' callbacks for a head: its header lines, as omgate hands them on."""

    __slots__ = ("headers",)

    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value.strip(OWS)))


def read_head(head: bytes) -> RequestHead | Refusal:
    """A whole request head (its request line to its empty line, as :class:`HeadScanner`
    found it): the request, or why it is refused."""
    line = REQUEST_LINE.match(head)
    if line is None:
        return malformed("the request line is not method, target and HTTP/1.0 or HTTP/1.1")
    method, target, version = line.groups()
    reader = _HeaderReader()
    try:
        HttpRequestParser(reader).feed_data(head)
    except HttpParserUpgrade:
        pass  # omgate switches to no other protocol: an Upgrade is a plain request
    except HttpParserError as error:
        # llhttp stops at the first error: the framing rules read the raw lines instead
        raw = RequestHead(method, target, _version(version), _raw_headers(head))
        return framing_refusal(raw) or malformed(str(error))
    request = RequestHead(method, target, _version(version), tuple(reader.headers))
    return framing_refusal(request) or host_refusal(request) or request


def _version(version: bytes) -> HttpVersion:
    return b"1.0" if version == b"1.0" else b"1.1"


def _raw_headers(head: bytes) -> HeaderFields:
    """A head's header lines split at their first colon, unchecked (for a refusal only)."""
    lines = head.split(b"\r\n")[1:]
    return tuple((name.strip(OWS).lower(), value.strip(OWS))
                 for name, _colon, value in (line.partition(b":") for line in lines if line))


def comma_values(headers: HeaderFields, name: bytes) -> list[bytes]:
    """The lower-case, comma-separated values of every ``name`` header, as h11 reads them."""
    return [value.strip(OWS).lower() for found, values in headers if found == name
            for value in values.split(b",") if value.strip(OWS)]


def framing_refusal(request: RequestHead) -> Refusal | None:
    """A request whose body's framing a proxy in front could read otherwise than omgate
    (RFC 9112 section 6.1): its bytes after what omgate reads as its body would be a request
    the proxy never saw, with whatever forwarded headers the sender wrote."""
    encodings = [value for name, value in request.headers if name == b"transfer-encoding"]
    if not encodings:
        return None
    if any(name == b"content-length" for name, _value in request.headers):
        return Refusal("content_length_with_transfer_encoding", 400,
                       "The request has both Content-Length and Transfer-Encoding.")
    if request.http_version == b"1.0":
        return Refusal("transfer_encoding_in_http10", 400,
                       "An HTTP/1.0 request cannot have a Transfer-Encoding.")
    if [value.lower() for value in encodings] != [b"chunked"]:
        return malformed("the only transfer coding served is one chunked", 501)
    return None


def host_refusal(request: RequestHead) -> Refusal | None:
    """An HTTP/1.1 request has one valid Host header (RFC 9112 section 3.2); HTTP/1.0 at
    most one."""
    hosts = [value for name, value in request.headers if name == b"host"]
    if len(hosts) > 1:
        return malformed("it has more than one Host header")
    if not hosts:
        return malformed("it has no Host header") if request.http_version == b"1.1" else None
    if not HOST.fullmatch(hosts[0]):
        return malformed(f"its Host {hosts[0]!r} is not a host name or address and a port")
    return None


def malformed(detail: str, status: RefusalStatus = 400) -> Refusal:
    """A request that is not HTTP/1.1 as omgate reads it (llhttp's error, or omgate's own)."""
    return Refusal("malformed_request", status,
                   f"The request is not valid HTTP/1.1: {clipped(detail)}.")
