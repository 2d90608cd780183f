"""HTTP/1.1 as a listener's connection serves it, without sockets: bytes in, bytes out.

HttpServing (as the listeners use it) runs each connection on its driver
(service/listeners/connection.py), here over a transport the test plays; these tests hold
what hypercorn's own protocol did, and that a whole answer leaves in one write.
"""

from __future__ import annotations

import asyncio
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.requests import Request

from service.app import read_body as read_whole_body
from service.app import refusal_fault
from service.budget import BodyBudget, BudgetRules
from service.listeners.connection import Deadline, Deadlines, HttpConnection
from service.listeners.framing import (
    DEFAULT_MAX_HEADER_COUNT,
    MAX_HEAD_BYTES,
    MAX_HEADER_LINE_BYTES,
    HeadLimits,
)
from service.listeners.hypercorn_glue import hypercorn_config
from service.listeners.layers import PLAIN
from service.listeners.serving import HttpServing

App = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]],
               Awaitable[None]]


class _Socket:
    family = 2

    def setsockopt(self, *_option: Any) -> None:  # SO_LINGER, for a connection cut off
        return None


class Peer:
    """The client's side of one connection, as the transport the server writes to: what it
    sent, and each write it got."""

    def __init__(self) -> None:
        self.reader = asyncio.StreamReader()  # what HttpServing takes the socket over from
        self.writes: list[bytes] = []
        self.closed = asyncio.Event()
        self.transport = self
        self.protocol: Any = None
        self.reading = True
        self.closed_by_server = False
        self.aborted = False

    # what the connection uses of an asyncio transport
    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    def write(self, data: bytes) -> None:
        if self.closed.is_set():  # asyncio's transports drop it
            return
        self.writes.append(bytes(data))

    def get_write_buffer_size(self) -> int:
        return 0

    def is_reading(self) -> bool:
        return self.reading

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"socket": _Socket(), "peername": ("127.0.0.1", 50000),
                "sockname": ("127.0.0.1", 443)}.get(name, default)

    def close(self) -> None:
        if not self.closed.is_set():
            self.closed.set()
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    def abort(self) -> None:
        self.aborted = True
        self.close()

    def is_closing(self) -> bool:
        return self.closed.is_set()

    # the client
    def send(self, data: bytes) -> None:
        if not self.closed.is_set():
            self.protocol.data_received(data)

    def send_eof(self) -> None:
        if not self.closed.is_set():
            self.protocol.eof_received()

    @property
    def received(self) -> bytes:
        return b"".join(self.writes)


EOF = None  # in what a test sends: the client closes its side


async def _answering(app: App, *sends: bytes | float | None, until: Callable[[Peer], bool],
                     config: Any = None, deadlines: Deadlines | None = None) -> Peer:
    peer = Peer()
    config = config or hypercorn_config(read_timeout=60, graceful_timeout=1)
    serving = HttpServing(app, config, deadlines or Deadlines())
    connection = asyncio.create_task(serving.serve(peer.reader, peer))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    for data in sends:
        if data is EOF:
            peer.send_eof()
        elif isinstance(data, float):  # a pause of that many seconds
            await asyncio.sleep(data)
        else:
            peer.send(data)
        await asyncio.sleep(0.01)
    async with asyncio.timeout(5):
        while not until(peer):
            await asyncio.sleep(0.01)
        peer.closed_by_server = peer.closed.is_set()
        peer.send_eof()
        await connection
    return peer


def serve(app: App, *sends: bytes | float | None, until: Callable[[Peer], bool],
          **options: Any) -> Peer:
    return asyncio.run(_answering(app, *sends, until=until, **options))


def post(body: bytes, *extra: bytes, method: bytes = b"POST") -> bytes:
    return (method + b" /salesforce/outbound?x=1 HTTP/1.1\r\nHost: omgate\r\n"
            + b"".join(extra) + b"Content-Length: %d\r\n\r\n" % len(body) + body)


async def read_body(receive: Callable) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def echo(scope: dict, receive: Callable, send: Callable) -> None:
    """Answers with what it read, and the scope's path and query."""
    body = await read_body(receive)
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


# -- framing chosen by an attacker ---------------------------------------------------------------

class Recording:
    """``echo``, remembering the path of every request it was given."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        self.paths.append(scope["path"])
        await echo(scope, receive, send)


def refused_and_closed(peer: Peer) -> bool:
    return peer.closed.is_set() or answers(peer) > 1


# A second request, as a proxy that frames by Content-Length never sees it: with an address
# the attacker chose, believed from a trusted proxy.
SMUGGLED = (b"POST /smuggled HTTP/1.1\r\nHost: omgate\r\nX-Forwarded-For: 203.0.113.66\r\n"
            b"Content-Length: 0\r\n\r\n")


@pytest.mark.parametrize("framing", [
    b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: chunked\r\nContent-Length: %d\r\n",
    b"content-length: %d\r\ntransfer-encoding: CHUNKED\r\n",
], ids=["length-first", "encoding-first", "spelt-otherwise"])
def test_content_length_with_transfer_encoding_is_refused_and_the_connection_closed(framing):
    app = Recording()
    body = b"0\r\n\r\n" + SMUGGLED
    request = (b"POST /salesforce/outbound HTTP/1.1\r\nHost: omgate\r\n"
               + framing % len(body) + b"\r\n" + body)
    peer = serve(app, request, until=refused_and_closed)
    assert app.paths == []  # neither the first request nor the smuggled one was served
    assert answers(peer) == 1 and peer.received.startswith(b"HTTP/1.1 400 ")
    assert b"connection: close" in peer.received.lower() and peer.closed_by_server


def test_transfer_encoding_on_an_http_1_0_request_is_refused_and_the_connection_closed():
    app = Recording()
    request = (b"POST /salesforce/outbound HTTP/1.0\r\nHost: omgate\r\nConnection: keep-alive\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED)
    peer = serve(app, request, until=refused_and_closed)
    assert app.paths == []
    assert answers(peer) == 1 and peer.received.startswith(b"HTTP/1.1 400 ")
    assert peer.closed_by_server


def get(*headers: bytes) -> bytes:
    """A request head with ``headers`` after its Host line (one header line too)."""
    return (b"GET /healthz HTTP/1.1\r\nHost: omgate\r\n"
            + b"".join(header + b"\r\n" for header in headers) + b"\r\n")


def test_a_head_of_sixteen_thousand_header_lines_is_refused_before_it_is_parsed():
    app = Recording()
    head = get(*[b"a:"] * 16_000)
    assert len(head) < 64 * 1024  # within the head's size limit
    peer = serve(app, head, until=lambda p: p.closed.is_set() or answers(p) == 1)
    assert app.paths == []
    assert answers(peer) == 1 and peer.received.startswith(b"HTTP/1.1 431 ")
    assert peer.closed_by_server
    seconds, served = parse_cost(head)
    assert not served and seconds < 0.010, f"{seconds * 1000:.1f} ms"


def test_more_header_lines_than_the_cap_get_a_431_and_the_connection_closes():
    app = Recording()
    peer = serve(app, get(*[b"X-A: b"] * 99), get(*[b"X-A: b"] * 100),
                 until=refused_and_closed)
    assert app.paths == ["/healthz"]  # 100 lines, Host included, are served
    assert answers(peer) == 2 and b"HTTP/1.1 431 " in peer.writes[-1]
    assert peer.closed_by_server


def test_a_header_line_longer_than_its_cap_gets_a_431_and_the_connection_closes():
    app = Recording()
    fits = b"X-Long: " + b"v" * (8 * 1024 - len(b"X-Long: \r\n"))
    peer = serve(app, get(fits), get(fits + b"v"), until=refused_and_closed)
    assert app.paths == ["/healthz"]
    assert answers(peer) == 2 and b"HTTP/1.1 431 " in peer.writes[-1]
    assert peer.closed_by_server


def test_a_pipelined_head_past_the_cap_is_refused_after_the_answer_before_it():
    app = Recording()
    peer = serve(app, get() + get(*[b"X-A: b"] * 100) + get(), until=refused_and_closed)
    assert app.paths == ["/healthz"]
    assert answers(peer) == 2 and b"HTTP/1.1 431 " in peer.writes[-1]
    assert peer.closed_by_server


@pytest.mark.parametrize("cut", [1, 17, 40, 41, 416, 830, 836, 838])
def test_a_head_past_the_cap_is_refused_wherever_its_reads_are_cut(cut):
    app = Recording()
    head = get(*[b"X-A: b"] * 100)
    peer = serve(app, head[:cut], head[cut:], until=refused_and_closed)
    assert app.paths == [] and peer.received.startswith(b"HTTP/1.1 431 ")


def test_the_forwarded_certificate_headers_may_take_the_whole_head():
    chain = b"X-Forwarded-Client-Cert: " + b"M" * 60_000
    app = Recording()
    peer = serve(app, get(chain), until=lambda p: answers(p) == 1,
                 config=forwarding(CERT_HEADER))
    assert app.paths == ["/healthz"] and peer.received.startswith(b"HTTP/1.1 200 ")
    # where another header is configured, that one is bounded as any other line
    peer = serve(app, get(chain), until=refused_and_closed, config=forwarding("client-cert"))
    assert app.paths == ["/healthz"] and peer.received.startswith(b"HTTP/1.1 431 ")
    # and the head as a whole still is
    peer = serve(app, get(chain + b"M" * 6000), until=refused_and_closed,
                 config=forwarding(CERT_HEADER))
    assert app.paths == ["/healthz"] and peer.received.startswith(b"HTTP/1.1 431 ")


def test_a_chunked_body_alone_is_still_served():
    request = (b"POST /salesforce/outbound HTTP/1.1\r\nHost: omgate\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    peer = serve(echo, request + request, until=lambda p: answers(p) == 2)
    assert peer.received.endswith(b"/salesforce/outbound? hello")
    assert not peer.closed_by_server


@pytest.mark.parametrize(("request_bytes", "status"), [
    (b"POST /salesforce/outbound HTTP/1.1\r\nHost: omgate\r\nContent-Length: 5\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", b"400"),
    (get(*[b"X-A: b"] * 100), b"431"),
], ids=["framed-two-ways", "too-many-headers"])
def test_on_the_message_listeners_a_refusal_is_a_client_fault(request_bytes, status):
    config = hypercorn_config(read_timeout=60, graceful_timeout=1, answer_refusal=refusal_fault)
    peer = serve(echo, request_bytes, until=refused_and_closed, config=config)
    head, _, body = peer.received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 " + status + b" ")
    assert b"content-type: text/xml; charset=utf-8" in head
    assert b"<faultcode>soapenv:Client</faultcode>" in body
    correlation = head.split(b"x-correlation-id: ")[1].split(b"\r\n")[0]
    assert b"(correlation id " + correlation + b")" in body
    assert peer.closed_by_server


def test_a_long_header_line_trickled_a_byte_at_a_time_is_refused_at_its_cap():
    app = Recording()
    start = b"GET /healthz HTTP/1.1\r\nHost: omgate\r\nX-Long: "
    sends = [start, *[b"v"] * 1024 * 9]

    async def trickle() -> Peer:
        peer = Peer()
        serving = HttpServing(app, hypercorn_config(read_timeout=60, graceful_timeout=1))
        connection = asyncio.create_task(serving.serve(peer.reader, peer))  # type: ignore
        await asyncio.sleep(0)
        for data in sends:
            peer.send(data)
            await asyncio.sleep(0)
            if peer.closed.is_set():
                break
        async with asyncio.timeout(5):
            while not peer.closed.is_set():
                await asyncio.sleep(0.01)
        await connection
        return peer

    peer = asyncio.run(trickle())
    assert peer.received.startswith(b"HTTP/1.1 431 ")  # without waiting for the line's end


def test_a_whole_request_then_a_half_close_is_answered_then_the_connection_closes():
    stored: list[bytes] = []

    async def storing(scope: dict, receive: Callable, send: Callable) -> None:
        body = await read_body(receive)
        await asyncio.sleep(0.1)  # storing takes a moment; the client has half-closed
        stored.append(body)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"3")]})
        await send({"type": "http.response.body", "body": b"ack"})

    peer = serve(storing, post(b"message"), EOF, until=lambda p: p.closed.is_set())
    assert stored == [b"message"]
    assert peer.received.startswith(b"HTTP/1.1 200 ") and peer.received.endswith(b"ack")
    assert peer.closed_by_server


def test_expect_100_continue_does_not_restart_the_request_deadline():
    # The deadline runs from the head's first byte: the 100 Continue is not the answer.
    request = post(b"0123456789", b"Expect: 100-continue\r\n")
    head, _, body = request.partition(b"\r\n\r\n")
    peer = serve(echo, head + b"\r\n\r\n", 1.0, body[:5], 1.5, body[5:],
                 until=lambda p: p.closed.is_set() or b" 200 " in p.received,
                 deadlines=Deadlines(request=2))
    assert peer.received.startswith(b"HTTP/1.1 100 ")
    assert b" 200 " not in peer.received  # 2.5 s after the head's first byte: cut off
    assert peer.closed_by_server


# -- the connection's deadlines and flow, from the driver (service/listeners/connection.py) --

async def _connected(app: App, config: Any = None, deadlines: Deadlines | None = None
                     ) -> tuple[Peer, HttpServing, asyncio.Task[None]]:
    peer = Peer()
    serving = HttpServing(app, config or hypercorn_config(read_timeout=60, graceful_timeout=1),
                          deadlines or Deadlines())
    task = asyncio.create_task(serving.serve(peer.reader, peer))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    return peer, serving, task


def test_a_deadline_set_again_fires_once_after_the_last_setting():
    fired: list[float] = []

    async def run() -> float:
        loop = asyncio.get_running_loop()
        deadline = Deadline(loop, 0.2, lambda: fired.append(loop.time()))
        started = loop.time()
        for _ in range(3):
            deadline.set()
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.35)
        deadline.set()
        deadline.clear()  # cleared before it was due: nothing happens
        await asyncio.sleep(0.3)
        return started

    started = asyncio.run(run())
    assert len(fired) == 1 and 0.4 <= fired[0] - started < 0.55


def test_a_connection_that_sends_no_request_is_closed_after_the_idle_timeout():
    async def run() -> tuple[Peer, float]:
        config = hypercorn_config(read_timeout=60, graceful_timeout=1, idle_timeout=0.3)
        peer, _serving, task = await _connected(echo, config)
        started = time.monotonic()
        peer.send(post(b"one"))  # answered; then the idle timeout runs
        async with asyncio.timeout(3):
            await task
        return peer, time.monotonic() - started

    peer, took = asyncio.run(run())
    assert answers(peer) == 1 and peer.closed.is_set() and 0.3 <= took < 1


def test_a_head_that_stops_arriving_is_closed_after_the_read_timeout():
    async def run() -> tuple[Peer, float]:
        config = hypercorn_config(read_timeout=1, graceful_timeout=1, idle_timeout=60)
        peer, _serving, task = await _connected(echo, config, Deadlines(request=60))
        started = time.monotonic()
        peer.send(b"POST /salesforce/outbound HTTP/1.1\r\nHost: omgate\r\n")
        async with asyncio.timeout(4):
            await task
        return peer, time.monotonic() - started

    peer, took = asyncio.run(run())
    assert peer.closed.is_set() and answers(peer) == 0 and 1 <= took < 2


def test_stopping_closes_idle_connections_at_once_and_answers_the_others_first():
    async def run() -> tuple[Peer, Peer]:
        release = asyncio.Event()

        async def slow(scope: dict, receive: Callable, send: Callable) -> None:
            await release.wait()
            await echo(scope, receive, send)

        idle, serving, idle_task = await _connected(slow)
        busy = Peer()
        busy_task = asyncio.create_task(serving.serve(busy.reader, busy))  # type: ignore
        await asyncio.sleep(0)
        busy.send(post(b"in flight"))
        await asyncio.sleep(0.05)
        await serving.terminate()
        async with asyncio.timeout(1):
            await idle_task  # closed at once
        assert not busy.closed.is_set()
        release.set()
        async with asyncio.timeout(2):
            await busy_task  # answered, then closed
        return idle, busy

    idle, busy = asyncio.run(run())
    assert idle.received == b"" and idle.closed.is_set()
    assert answers(busy) == 1 and busy.received.endswith(b"in flight") and busy.closed.is_set()
    assert b"\r\nconnection: close\r\n" in busy.received  # it says so, as nginx does


def test_a_body_the_app_does_not_read_stops_the_reading_until_it_does():
    async def run() -> list[bool]:
        reading = asyncio.Event()
        seen: list[bool] = []

        async def late_reader(scope: dict, receive: Callable, send: Callable) -> None:
            await reading.wait()
            await echo(scope, receive, send)

        config = hypercorn_config(read_timeout=60, graceful_timeout=1)
        config.max_app_queue_size = 2
        peer, _serving, task = await _connected(late_reader, config)
        head = (b"POST /salesforce/outbound HTTP/1.1\r\nHost: omgate\r\n"
                b"Content-Length: 30\r\n\r\n")
        peer.send(head)
        for _part in range(2):  # two parts of the body wait for the app: reading pauses
            peer.send(b"x" * 10)
            seen.append(peer.reading)
        reading.set()
        await asyncio.sleep(0.05)
        seen.append(peer.reading)  # the app read them: reading goes on
        peer.send(b"y" * 10)
        async with asyncio.timeout(2):
            while answers(peer) == 0:
                await asyncio.sleep(0.01)
        peer.send_eof()
        await task
        assert peer.received.endswith(b"x" * 20 + b"y" * 10)
        return seen

    assert asyncio.run(run()) == [True, False, True]


def test_reading_waits_until_the_app_has_taken_its_queue_below_the_limit():
    """Reading went on after every message the app took, however many it had left."""
    async def run() -> list[bool]:
        take = asyncio.Queue[None]()
        seen: list[bool] = []

        async def slow_reader(scope: dict, receive: Callable, send: Callable) -> None:
            while (await take.get(), await receive())[1].get("more_body"):
                pass
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})

        config = hypercorn_config(read_timeout=60, graceful_timeout=1)
        config.max_app_queue_size = 1
        peer, _serving, task = await _connected(slow_reader, config)
        # one read with the last chunk: two messages for the app (content, then the end)
        peer.send(b"POST /salesforce/outbound HTTP/1.1\r\nHost: omgate\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
        seen.append(peer.reading)
        for _message in range(2):
            take.put_nowait(None)
            await asyncio.sleep(0.02)
            seen.append(peer.reading)
        peer.send_eof()
        await task
        return seen

    assert asyncio.run(run()) == [False, False, True]


def test_a_body_in_small_chunks_holds_about_what_the_budget_counts():
    """What a client makes the server hold stays near what the body budget counts: a
    message per chunk held 131 MB for 2 MiB counted (an attacker's review)."""
    content = 2 * 1024 * 1024
    found: dict[str, int] = {}

    async def run() -> None:
        budget = BodyBudget(BudgetRules(64 * 2**20, 16 * 2**20), 5)

        async def reader(scope: dict, receive: Callable, send: Callable) -> None:
            async with budget.hold("client", content) as share:
                body = await read_whole_body(Request(scope, receive), 10 * 2**20, share)
                found.update(counted=budget.used, held=tracemalloc.get_traced_memory()[1],
                             length=len(body))
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})

        peer, _serving, task = await _connected(reader)
        wire = b"8\r\nabcdefgh\r\n" * (content // 8) + b"0\r\n\r\n"
        tracemalloc.start()
        try:
            peer.send(b"POST /salesforce/outbound HTTP/1.1\r\nHost: omgate\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\n")
            for start in range(0, len(wire), 256 * 1024):  # as socket reads bring it
                async with asyncio.timeout(5):
                    while not peer.reading:
                        await asyncio.sleep(0)
                peer.send(wire[start:start + 256 * 1024])
                await asyncio.sleep(0)
            async with asyncio.timeout(10):
                while answers(peer) == 0:
                    await asyncio.sleep(0.01)
        finally:
            tracemalloc.stop()
        peer.send_eof()
        await task

    asyncio.run(run())
    assert found["length"] == content and found["counted"] == content
    assert found["held"] < 4 * found["counted"], f"{found['held']} bytes held"


def test_a_client_that_does_not_read_is_reset_after_the_write_deadline():
    async def run() -> tuple[Peer, float]:
        peer, _serving, task = await _connected(echo, deadlines=Deadlines(write=0.3))
        peer.send(post(b"one"))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        peer.protocol.pause_writing()  # asyncio: the socket's buffer is full
        async with asyncio.timeout(2):
            await task
        return peer, time.monotonic() - started

    peer, took = asyncio.run(run())
    assert peer.aborted and 0.3 <= took < 1


def test_a_client_gone_before_its_socket_is_taken_over_leaves_nothing_behind():
    # The client reset the connection while its handshake's last steps (the gate, in a
    # thread) were awaited: asyncio closed the transport before the driver took it over.
    async def run() -> HttpServing:
        peer = Peer()
        peer.closed.set()
        serving = HttpServing(echo, hypercorn_config(read_timeout=60, graceful_timeout=1))
        async with asyncio.timeout(1):
            await serving.serve(peer.reader, peer)  # type: ignore[arg-type]
        return serving

    serving = asyncio.run(run())
    assert not serving.lifecycle.idle  # not left waiting as an idle connection


def parse_cost(head: bytes, config: Any = None, repeat: int = 5) -> tuple[float, bool]:
    """The least CPU time of ``repeat`` runs (after a warm-up) of one connection taking
    ``head`` in one read, socket-free: what the head costs the event loop until the app is
    called; and whether it is (the head was not refused)."""
    config = config or hypercorn_config(read_timeout=60, graceful_timeout=1)

    async def once() -> tuple[float, bool]:
        serving = HttpServing(echo, config)
        peer = Peer()
        connection = HttpConnection(serving.settings, serving.lifecycle, peer,  # type: ignore
                                    PLAIN, {})
        connection.begin(b"", eof=False)
        started = time.thread_time()
        connection.data_received(head)
        seconds = time.thread_time() - started
        served = connection.call is not None
        for task in connection.tasks:
            task.cancel()
        connection.abort()
        return seconds, served

    async def least() -> tuple[float, bool]:
        await once()
        runs = [await once() for _ in range(repeat)]
        return min(seconds for seconds, _served in runs), runs[0][1]

    return asyncio.run(least())


def forwarding(*names: str) -> Any:
    """The configuration of a listener whose forwarded-certificate headers are ``names``."""
    return hypercorn_config(read_timeout=60, graceful_timeout=1, head_limits=HeadLimits(
        long_headers=frozenset(name.encode() for name in names)))


CERT_HEADER = "x-forwarded-client-cert"
VALUE_PATTERNS = [b"v", b"a, b; q=0.5 ", b"%2D%2D-----BEGIN CERTIFICATE-----", b"\t x",
                  b"\xff\x80", b"MIIB/+=="]


@st.composite
def heads_within_the_limits(draw: st.DrawFn) -> bytes:
    """Request heads of many shapes within the limits: up to the cap of header lines, lines
    up to the cap of a line, and a forwarded chain in one header, up to the head's limit."""
    start = b"POST /salesforce/outbound?x=1 HTTP/1.1\r\nHost: omgate\r\n"
    with_chain = draw(st.booleans())
    count = draw(st.integers(0, DEFAULT_MAX_HEADER_COUNT - 1 - with_chain))
    line_bytes = draw(st.integers(len(b"X-99:\r\n"), MAX_HEADER_LINE_BYTES))
    pattern = draw(st.sampled_from(VALUE_PATTERNS))
    room = MAX_HEAD_BYTES - len(start) - len(b"\r\n")
    chain_line = len(CERT_HEADER) + len(b": \r\n")
    count = min(count, (room - with_chain * chain_line) // line_bytes)
    lines = []
    for number in range(count):
        name = b"X-%d: " % number
        lines.append(name + (pattern * line_bytes)[:line_bytes - len(name) - 2].strip()
                     + b"\r\n")
    if with_chain:
        free = room - sum(map(len, lines)) - chain_line
        size = draw(st.integers(0, free))
        lines.append(CERT_HEADER.encode() + b": " + b"M" * size + b"\r\n")
    head = start + b"".join(lines) + b"\r\n"
    assert len(head) <= MAX_HEAD_BYTES
    return head


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.data_too_large])
@given(heads_within_the_limits())
def test_no_request_head_within_the_limits_costs_more_than_ten_milliseconds(head):
    seconds, served = parse_cost(head, forwarding(CERT_HEADER), repeat=3)
    assert served
    assert seconds < 0.010, f"{seconds * 1000:.1f} ms for a head of {len(head)} bytes"


def test_a_read_of_two_thousand_pipelined_requests_is_answered_in_order_without_nesting():
    # One 64 KiB read can hold about two thousand minimal requests: each waits for the
    # answer before it, and taking the next must not go one call deeper each time.
    request = b"GET /h HTTP/1.1\r\nHost: a\r\n\r\n"
    count = 2000
    assert len(request) * count <= 64 * 1024
    app = Recording()
    peer = serve(app, request * count, until=lambda p: answers(p) == count or p.closed.is_set(),
                 config=_unlimited_requests())
    assert answers(peer) == count and len(app.paths) == count
    assert not peer.closed_by_server


def _unlimited_requests() -> Any:
    config = hypercorn_config(read_timeout=60, graceful_timeout=1)
    config.keep_alive_max_requests = 10_000
    return config
