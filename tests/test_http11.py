"""HTTP/1.1 as service/listeners/http11.py serves it, without sockets: bytes in, bytes out.

hypercorn runs the connection (HttpServing, the same as the listeners use) and Http11 turns
h11's events into ASGI calls; these tests hold what hypercorn's own protocol did, and that
a whole answer leaves in one write.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from service.listeners.hypercorn_glue import HttpServing, hypercorn_config

App = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]],
               Awaitable[None]]


class _Socket:
    family = 2

    def getpeername(self) -> tuple[str, int]:
        return ("127.0.0.1", 50000)

    def getsockname(self) -> tuple[str, int]:
        return ("127.0.0.1", 443)


class Peer:
    """The client's side of one connection: what it sent, and each write it got."""

    def __init__(self) -> None:
        self.reader = asyncio.StreamReader()
        self.writes: list[bytes] = []
        self.closed = asyncio.Event()
        self.transport = self
        self.closed_by_server = False

    # what hypercorn uses of a StreamWriter and its transport
    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    async def drain(self) -> None:
        return None

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (0, 0)

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return self.closed.is_set()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return _Socket() if name == "socket" else default

    def write_eof(self) -> None:
        return None

    def close(self) -> None:
        self.closed.set()

    async def wait_closed(self) -> None:
        return None

    @property
    def received(self) -> bytes:
        return b"".join(self.writes)


EOF = None  # in what a test sends: the client closes its side


async def _answering(app: App, *sends: bytes | None, until: Callable[[Peer], bool]) -> Peer:
    peer = Peer()
    serving = HttpServing(app, hypercorn_config(read_timeout=60, graceful_timeout=1))
    connection = asyncio.create_task(serving.serve(peer.reader, peer))
    for data in sends:
        if data is EOF:
            peer.reader.feed_eof()
        else:
            peer.reader.feed_data(data)
        await asyncio.sleep(0.01)
    async with asyncio.timeout(5):
        while not until(peer):
            await asyncio.sleep(0.01)
        peer.closed_by_server = peer.closed.is_set()
        if not peer.reader.at_eof():
            peer.reader.feed_eof()
        await connection
    return peer


def serve(app: App, *sends: bytes | None, until: Callable[[Peer], bool]) -> Peer:
    return asyncio.run(_answering(app, *sends, until=until))


def post(body: bytes, *extra: bytes, method: bytes = b"POST") -> bytes:
    return (method + b" /salesforce/outbound?x=1 HTTP/1.1\r\nHost: omgate\r\n"
            + b"".join(extra) + b"Content-Length: %d\r\n\r\n" % len(body) + body)


async def echo(scope: dict, receive: Callable, send: Callable) -> None:
    """Answers with what it read, and the scope's path and query."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    answer = b"%s?%s %s" % (scope["path"].encode(), scope["query_string"], body)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(answer)).encode())]})
    await send({"type": "http.response.body", "body": answer})


def answers(peer: Peer) -> int:
    return peer.received.count(b"HTTP/1.1 ")


def test_each_answer_of_a_kept_alive_connection_leaves_in_one_write():
    peer = serve(echo, post(b"first"), until=lambda p: answers(p) == 1)
    assert len(peer.writes) == 1
    [answer] = peer.writes
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"\r\ndate: " in head and b"\r\nserver: hypercorn" in head
    assert body == b"/salesforce/outbound?x=1 first"
    assert not peer.closed_by_server  # kept alive for the next request


def test_pipelined_requests_are_answered_in_order_on_one_connection():
    peer = serve(echo, post(b"one") + post(b"two") + post(b"three"),
                 until=lambda p: answers(p) == 3)
    bodies = [part.partition(b"\r\n\r\n")[2] for part in peer.writes]
    assert bodies == [b"/salesforce/outbound?x=1 one", b"/salesforce/outbound?x=1 two",
                      b"/salesforce/outbound?x=1 three"]


def test_an_answer_to_head_has_its_headers_and_no_body():
    peer = serve(echo, post(b"", method=b"HEAD"), until=lambda p: answers(p) == 1)
    head, _, body = peer.received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and b"content-length: " in head
    assert body == b""


def test_an_app_that_fails_before_answering_gets_a_500_and_the_connection_closes():
    async def failing(scope: dict, receive: Callable, send: Callable) -> None:
        raise RuntimeError("bug")

    peer = serve(failing, post(b"x") + post(b"never answered"),
                 until=lambda p: p.closed.is_set())
    assert answers(peer) == 1
    assert peer.received.startswith(b"HTTP/1.1 500 ")
    assert b"connection: close" in peer.received.lower()


def test_an_app_that_stops_after_its_status_line_sends_it_and_closes():
    async def halfway(scope: dict, receive: Callable, send: Callable) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"100")]})

    peer = serve(halfway, post(b"x"), until=lambda p: p.closed.is_set())
    assert peer.received.startswith(b"HTTP/1.1 200 ")
    assert peer.received.endswith(b"\r\n\r\n")  # no body was ever given


def test_a_message_after_the_answer_is_an_error_of_the_app_and_not_a_second_answer():
    async def twice(scope: dict, receive: Callable, send: Callable) -> None:
        await echo(scope, receive, send)
        await send({"type": "http.response.body", "body": b"more"})

    peer = serve(twice, post(b"x"), until=lambda p: answers(p) == 1)
    assert answers(peer) == 1 and not peer.received.endswith(b"more")


def test_expect_100_continue_is_answered_before_the_body_is_sent():
    request = post(b"late body", b"Expect: 100-continue\r\n")
    head, _, body = request.partition(b"\r\n\r\n")
    peer = serve(echo, head + b"\r\n\r\n", body,
                 until=lambda p: b"200 " in p.received)
    assert peer.received.startswith(b"HTTP/1.1 100 ")
    assert peer.received.endswith(b"late body")


@pytest.mark.parametrize("request_line", [b"GARBAGE\r\n\r\n", b"GET / HTTP/1.1\r\n\r\n"],
                         ids=["not-http", "no-host"])
def test_a_malformed_request_gets_a_400_and_the_connection_closes(request_line):
    peer = serve(echo, request_line, until=lambda p: p.closed.is_set())
    assert peer.received.startswith(b"HTTP/1.1 400 ")
    assert b"connection: close" in peer.received.lower()


def test_the_app_hears_a_disconnect_when_the_client_goes_mid_body():
    heard: list[dict] = []

    async def listening(scope: dict, receive: Callable, send: Callable) -> None:
        while True:
            message = await receive()
            heard.append(message)
            if message["type"] == "http.disconnect" or not message.get("more_body"):
                return

    request = post(b"a body of 26 bytes in all..")
    serve(listening, request[:-10], EOF, until=lambda p: bool(heard))
    assert heard[-1] == {"type": "http.disconnect"}


def test_an_app_whose_status_line_h11_refuses_gets_a_500():
    async def bad_header(scope: dict, receive: Callable, send: Callable) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"x-injected", b"a\r\nset-cookie: b")]})

    peer = serve(bad_header, post(b"x"), until=lambda p: p.closed.is_set())
    assert peer.received.startswith(b"HTTP/1.1 500 ")
    assert b"set-cookie" not in peer.received.lower()


def test_an_app_that_sends_more_than_it_declared_has_its_connection_closed_at_once():
    async def overlong(scope: dict, receive: Callable, send: Callable) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"too long"})

    peer = serve(overlong, post(b"x"), until=lambda p: p.closed.is_set())
    assert b"too long" not in peer.received  # h11 sends nothing past the declared length
