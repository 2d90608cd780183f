"""The server's CPU per connection for accepting it as asyncio streams with a task (as
omgate's listeners accept a connection and read its TLS handshake today) against a bare
protocol (issue 23, item 3: a handshake driven by the connection's own protocol).

Both servers, on uvloop where it is installed, read two flights and write two (the
sizes of a TLS 1.3 handshake with a client certificate), then close; a client in another
process makes ``--connections`` connections one after another. Prints the server
thread's CPU (``time.thread_time``) in µs a connection, the least of ``--rounds``.

    python bench/accept_streams.py [--connections 3000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time

CLIENT_HELLO, SERVER_FLIGHT, CLIENT_FLIGHT, ANSWER = 500, 1500, 2000, 300
CLIENT = f"""
import socket, sys
port, count = int(sys.argv[1]), int(sys.argv[2])
for _ in range(count):
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"h" * {CLIENT_HELLO}); s.recv(65536)
        s.sendall(b"f" * {CLIENT_FLIGHT})
        while s.recv(65536):
            pass
"""


async def _streams(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(65536)
    writer.write(b"s" * SERVER_FLIGHT)
    async with asyncio.timeout(10):  # as the handshake's deadline is kept
        await reader.read(65536)
    writer.write(b"a" * ANSWER)
    writer.close()


class _Protocol(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.flights = 0

    def data_received(self, _data: bytes) -> None:
        self.flights += 1
        if self.flights == 1:
            self.transport.write(b"s" * SERVER_FLIGHT)
        else:
            self.transport.write(b"a" * ANSWER)
            self.transport.close()


async def _serve(kind: str, connections: int) -> float:
    loop = asyncio.get_running_loop()
    if kind == "streams":
        server = await asyncio.start_server(_streams, "127.0.0.1", 0)
    else:
        server = await loop.create_server(_Protocol, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = subprocess.Popen([sys.executable, "-c", CLIENT, str(port), str(connections)])
    started = time.thread_time()
    while client.poll() is None:
        await asyncio.sleep(0.05)
    spent = time.thread_time() - started
    server.close()
    return spent / connections


def _run(kind: str, connections: int) -> float:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(_serve(kind, connections))
    return uvloop.run(_serve(kind, connections))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    best: dict[str, float] = {}
    for _ in range(args.rounds):
        for kind in ("streams", "protocol"):  # interleaved
            cpu = _run(kind, args.connections)
            best[kind] = min(best.get(kind, cpu), cpu)
    print(json.dumps({f"{kind}_us_per_connection": round(cpu * 1e6) for kind, cpu
                      in best.items()}))


if __name__ == "__main__":
    main()
