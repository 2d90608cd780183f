"""What a connection may hold, and for how long: write deadlines, and connections
released as soon as they close. Real `omgate serve` processes, real TLS sockets, real
clients that misbehave."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import time

import httpx
from harness import PAYLOADS, fault_of, ssl_context

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
