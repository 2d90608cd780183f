"""What a connection may hold, and for how long: write deadlines, caps per client address
and in all, and connections released as soon as they close. Real `omgate serve`
processes, real TLS sockets, real clients that misbehave."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import ssl
import time
from collections.abc import Iterator

import httpx
from harness import PAYLOADS, SOAP_HEADERS, fault_of, free_port, is_ack, ssl_context
from messages import envelope, notification

BODY = (PAYLOADS / "amplabs-create_account.xml").read_bytes()
ESTABLISHED = 1  # tcpi_state, Linux's TCP_INFO
SHORT_TIMEOUTS = {"read_timeout": 3, "request_timeout": 3, "idle_timeout": 3,
                  "handshake_timeout": 3}


def tcp_state(sock: socket.socket) -> int:
    """The kernel's state of a connection, read without reading from it."""
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]


def refused_metric(server, reason: str) -> float:
    health = server.extra["health_port"]
    text = httpx.get(f"http://127.0.0.1:{health}/metrics").text
    found = re.search(rf'^omgate_connections_refused_total\{{reason="{reason}"\}} (\S+)$', text,
                      re.MULTILINE)
    return float(found.group(1)) if found else 0.0


# -- a client that does not read ---------------------------------------------------------------

def test_a_client_that_does_not_read_its_answers_is_cut_off(omgate_server):
    server = omgate_server({"server": {"write_timeout": 2, **SHORT_TIMEOUTS}})
    raw = socket.socket()
    # A small receive window and segment size, as a client across the internet has: the
    # server's socket cannot take every answer, so writing waits for the client to read.
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
    raw.connect(("127.0.0.1", server.https_port))
    with ssl_context(server.ca_path).wrap_socket(raw, server_hostname="localhost") as tls:
        unknown_path = b"GET /" + b"a" * 30000 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n"
        tls.settimeout(1)
        with contextlib.suppress(OSError):  # TimeoutError: the server stopped reading
            for _ in range(5000):
                tls.sendall(unknown_path)
        stalled = time.monotonic()
        while tcp_state(tls) == ESTABLISHED and time.monotonic() - stalled < 15:
            time.sleep(0.2)
        took = time.monotonic() - stalled
        assert tcp_state(tls) != ESTABLISHED, "the connection is still open"
    assert took < 2 + 4, f"cut off after {took:.1f} s"
    event = server.wait_for("connection.write_timeout")
    assert event["timeout"] == 2
    # the answers did not echo the path, and the log did not keep it either
    for logged in server.events("om.rejected"):
        assert len(logged["endpoint"]) < 250
    answer = httpx.get(f"{server.url}/{'b' * 30000}", verify=ssl_context(server.ca_path))
    assert answer.status_code == 404 and len(answer.content) < 2000
    _code, text, _correlation = fault_of(answer)
    assert "(30001 characters)" in text
    started = time.monotonic()
    assert server.stop() == 0
    assert time.monotonic() - started < 5  # nothing left for shutdown to wait for


def test_a_fault_quotes_a_bounded_part_of_what_the_client_sent(omgate_server):
    server = omgate_server()
    name = "F" * 40_000  # libxml2 allows names up to 50,000 characters
    body = envelope(notification(fields=f"<sf:{name}>1</sf:{name}><sf:{name}>2</sf:{name}>"))
    answer = server.post(body)
    assert answer.status_code == 400 and len(answer.content) < 2000
    _code, text, correlation = fault_of(answer)
    assert text.startswith("Notification 1 (Id 04lxx000000CaSdAAK): field 'FFF")
    assert "characters)" in text  # says it was cut
    logged = server.wait_for("om.rejected", lambda e: e["correlation_id"] == correlation)
    assert logged["reason"] == "invalid_field" and len(logged["detail"]) < 1100


# -- caps ------------------------------------------------------------------------------------------

def open_tls(server, prefix: bytes = b"") -> ssl.SSLSocket:
    """A TLS connection with its handshake done (after ``prefix``, a PROXY header)."""
    raw = socket.create_connection(("127.0.0.1", server.https_port), timeout=10)
    try:
        raw.sendall(prefix)
        tls = ssl_context(server.ca_path).wrap_socket(raw, server_hostname="localhost")
    except BaseException:
        raw.close()
        raise
    if tls.version() is None:
        # wrap_socket skips the handshake, silently, on a socket the server has reset
        # already (getpeername: not connected): a refusal after the PROXY header was sent
        tls.close()
        raise ConnectionResetError("the server closed the connection before the handshake")
    return tls


def assert_refused(server, prefix: bytes = b"") -> None:
    try:
        open_tls(server, prefix).close()
    except OSError:  # closed before the handshake: reset, or EOF
        return
    log = server.log_path.read_text()
    raise AssertionError(f"the connection was not refused; the server's log:\n{log[-6000:]}")


def served_again(server, deadline: float = 5) -> bool:
    """An ack on a new connection, once the server has noticed a client left."""
    limit = time.monotonic() + deadline
    while True:
        try:
            return is_ack(server.post(BODY))
        except httpx.TransportError:
            if time.monotonic() > limit:
                raise
            time.sleep(0.2)


@contextlib.contextmanager
def held(connections: list[ssl.SSLSocket]) -> Iterator[list[ssl.SSLSocket]]:
    try:
        yield connections
    finally:
        for connection in connections:
            connection.close()


def test_one_address_holds_at_most_max_connections_per_peer(omgate_server):
    server = omgate_server({"server": {"max_connections_per_peer": 3, "idle_timeout": 60}})
    with held([open_tls(server) for _ in range(3)]) as connections:
        assert_refused(server)
        event = server.wait_for("connection.refused")
        assert (event["reason"], event["limit"], event["peer"].split(":")[0]) == (
            "max_connections_per_peer", 3, "127.0.0.1")
        assert refused_metric(server, "max_connections_per_peer") == 1
        connections.pop().close()
        assert served_again(server)  # its share came back when one connection closed


def proxy_v1(client: str) -> bytes:
    family = "TCP6" if ":" in client else "TCP4"
    server = "::1" if ":" in client else "127.0.0.1"
    return f"PROXY {family} {client} {server} 40000 443\r\n".encode()


def test_behind_a_proxy_each_client_is_counted_and_the_proxy_only_in_the_total(omgate_server):
    server = omgate_server({"server": {
        "proxy_protocol": True, "trusted_proxies": ["127.0.0.1/32"],
        "max_connections_per_peer": 2, "max_connections": 7, "idle_timeout": 60}})
    with held([]) as connections:
        connections += [open_tls(server, proxy_v1("198.51.100.7")) for _ in range(2)]
        assert_refused(server, proxy_v1("198.51.100.7"))
        connections.append(open_tls(server, proxy_v1("198.51.100.8")))
        # one IPv6 host is given a /64: its addresses are one client
        connections += [open_tls(server, proxy_v1(f"2001:db8::{n}")) for n in (1, 2)]
        assert_refused(server, proxy_v1("2001:db8::3"))
        # the proxy's own connections (the client unknown) are not capped per address...
        connections += [open_tls(server, b"PROXY UNKNOWN\r\n") for _ in range(2)]
        # ...but count in max_connections, now reached
        assert_refused(server, proxy_v1("198.51.100.9"))
        assert refused_metric(server, "max_connections_per_peer") == 2
        assert refused_metric(server, "max_connections") == 1
        for reason in ("max_connections_per_peer", "max_connections"):
            server.wait_for("connection.refused", lambda e, r=reason: e["reason"] == r)
        reasons = {event["reason"] for event in server.events("connection.refused")}
        assert reasons == {"max_connections_per_peer", "max_connections"}


def test_requests_a_proxy_forwards_count_for_the_client_it_names(omgate_server):
    plain = free_port()
    server = omgate_server({"server": {"plain_bind": [f"127.0.0.1:{plain}"],
                                       "trusted_proxies": ["127.0.0.1/32"],
                                       "max_connections_per_peer": 2}})
    url = f"http://127.0.0.1:{plain}/salesforce/outbound"

    def begin(client: str) -> socket.socket:
        """A request whose body is still on its way: under way until it is closed."""
        sock = socket.create_connection(("127.0.0.1", plain), timeout=10)
        sock.sendall(b"POST /salesforce/outbound HTTP/1.1\r\nHost: omgate\r\n"
                     b"Content-Type: text/xml; charset=utf-8\r\n"
                     + f"X-Forwarded-For: {client}\r\nContent-Length: {len(BODY)}\r\n\r\n"
                     .encode() + BODY[:100])
        return sock

    def post(client: str | None) -> httpx.Response:
        forwarded = {"X-Forwarded-For": client} if client else {}
        return httpx.post(url, content=BODY, headers={**SOAP_HEADERS, **forwarded}, timeout=20)

    slow = [begin("198.51.100.20"), begin("198.51.100.20")]
    try:
        time.sleep(0.5)  # both requests are being read
        refused = post("198.51.100.20")
        assert refused.status_code == 503 and refused.headers["connection"] == "close"
        code, _text, correlation = fault_of(refused)
        assert code == "soapenv:Server"
        event = server.wait_for("om.rejected", lambda e: e["correlation_id"] == correlation)
        assert event["reason"] == "too_many_connections"
        assert is_ack(post("198.51.100.21"))  # another client
        assert is_ack(post(None))  # the proxy itself
    finally:
        for sock in slow:
            sock.close()
    limit = time.monotonic() + 5
    while (answer := post("198.51.100.20")).status_code == 503 and time.monotonic() < limit:
        time.sleep(0.2)
    assert is_ack(answer)
    assert refused_metric(server, "max_connections_per_peer") >= 1


# -- closed connections --------------------------------------------------------------------------

def open_descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def resident_mib(pid: int) -> float:
    for line in open(f"/proc/{pid}/status").read().splitlines():  # noqa: SIM115
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def one_message_per_connection(server, seconds: float, senders: int = 16) -> int:
    """``senders`` clients that each open a TLS connection per message for ``seconds``; half
    say ``Connection: close``, half just close once answered. Returns the acks."""
    context = ssl_context(server.ca_path)
    deadline = time.monotonic() + seconds

    async def sender(number: int) -> int:
        connection = "close" if number % 2 else "keep-alive"
        request = (b"POST /salesforce/outbound HTTP/1.1\r\nHost: localhost\r\n"
                   b"Content-Type: text/xml; charset=utf-8\r\n"
                   + f"Connection: {connection}\r\nContent-Length: {len(BODY)}\r\n\r\n"
                   .encode() + BODY)
        acks = 0
        while time.monotonic() < deadline:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", server.https_port, ssl=context, server_hostname="localhost")
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))
            acks += b"<Ack>true</Ack>" in await reader.readexactly(length)
            writer.close()  # close_notify, then gone without waiting for the server's
            writer.transport.abort()
        return acks

    return sum(await asyncio.gather(*(sender(number) for number in range(senders))))


def test_closed_connections_release_their_descriptors_and_memory_at_once(omgate_server):
    server = omgate_server({"server": {"idle_timeout": 15}})
    pid = server.process.pid
    idle = open_descriptors(pid)
    acks = [asyncio.run(one_message_per_connection(server, seconds=2)) for _ in range(3)]
    assert min(acks) > 0
    time.sleep(1)
    assert open_descriptors(pid) - idle <= 50, f"{open_descriptors(pid) - idle} over idle"
    assert resident_mib(pid) < 150


# -- a client that half-closes -------------------------------------------------------------------

def post_request(body: bytes) -> bytes:
    return (b"POST /salesforce/outbound HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Type: text/xml; charset=utf-8\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)


def read_to_the_end(sock: socket.socket) -> bytes:
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def ack_in(answer: bytes) -> bool:
    head, _, body = answer.partition(b"\r\n\r\n")
    return head.startswith(b"HTTP/1.1 200 ") and b"<Ack>true</Ack>" in body


def test_a_request_then_a_half_close_is_acknowledged_on_the_plain_listener(omgate_server):
    # A proxy may close its sending side once the request is sent; the message is stored,
    # so its ack must still be written.
    plain = free_port()
    server = omgate_server({"server": {"plain_bind": [f"127.0.0.1:{plain}"]}})
    with socket.create_connection(("127.0.0.1", plain), timeout=10) as sock:
        sock.sendall(post_request(BODY))
        sock.shutdown(socket.SHUT_WR)
        answer = read_to_the_end(sock)  # the server closes once it has answered
    assert ack_in(answer), answer[:300]
    server.wait_for("om.accepted")


def test_a_request_then_a_tcp_half_close_is_acknowledged_on_the_tls_listener(omgate_server):
    # TLS over a socket whose sending side is shut after the request (no close_notify),
    # as a TCP proxy in front of the TLS listener may do.
    server = omgate_server()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ssl_context(server.ca_path).wrap_bio(incoming, outgoing, server_hostname="localhost")
    with socket.create_connection(("127.0.0.1", server.https_port), timeout=10) as sock:
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                sock.sendall(outgoing.read())
                incoming.write(sock.recv(65536))
        tls.write(post_request(BODY))
        sock.sendall(outgoing.read())
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            incoming.write(chunk)
            with contextlib.suppress(ssl.SSLWantReadError, ssl.SSLZeroReturnError):
                while data := tls.read(65536):
                    answer += data
    assert ack_in(answer), answer[:300]
