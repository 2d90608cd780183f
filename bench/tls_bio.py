"""The server's CPU per TLS exchange: pyOpenSSL on memory BIOs (as omgate's TLS stream runs
it) against pyOpenSSL on the socket itself (a socket BIO), issue 23 item 3.

omgate's own TLS context (``service.tls.context.build_context``), the development PKI, a
client certificate. A Python ``ssl`` client in another thread sends a request of the
message's size and reads a short answer, over a socket pair; the server thread's CPU time
(``time.thread_time``) is what is counted: for the memory BIOs, every record goes through
``recv`` → ``bio_write`` → ``SSL_read`` and ``SSL_write`` → ``bio_read`` → ``send``, as
``service/tls/stream.py`` does; for the socket BIO, OpenSSL reads and writes the socket.
Prints, per mode, the least of ``--rounds`` runs, in µs per exchange and per handshake.

    python bench/tls_bio.py [--exchanges 2000] [--handshakes 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import ssl
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from OpenSSL import SSL

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from service.tls.context import TlsSettings, build_context  # noqa: E402
from service.tools.pki import build_dev_pki, dev_files  # noqa: E402

PAYLOAD = ROOT / "tests" / "fixtures" / "external" / "payloads" / "amplabs-create_account.xml"
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 250\r\n\r\n" + b"a" * 250
READ_SIZE = 65536


class MemoryBios:
    """The server end as omgate's TLS stream drives it: ciphertext through memory BIOs."""

    def __init__(self, context: SSL.Context, sock: socket.socket) -> None:
        self.sock = sock
        self.connection = SSL.Connection(context, None)
        self.connection.set_accept_state()

    def _flush(self) -> None:
        while True:
            try:
                data = self.connection.bio_read(READ_SIZE)
            except SSL.WantReadError:
                return
            self.sock.sendall(data)

    def handshake(self) -> None:
        while True:
            try:
                self.connection.do_handshake()
            except SSL.WantReadError:
                self._flush()
                self.connection.bio_write(self.sock.recv(READ_SIZE))
                continue
            self._flush()
            return

    def read(self, size: int) -> bytes:
        received = b""
        while len(received) < size:
            try:
                received += self.connection.recv(READ_SIZE)
            except SSL.WantReadError:
                self._flush()
                self.connection.bio_write(self.sock.recv(READ_SIZE))
        return received

    def write(self, data: bytes) -> None:
        self.connection.sendall(data)
        self._flush()


class SocketBio:
    """The server end on the socket itself: OpenSSL reads and writes it."""

    def __init__(self, context: SSL.Context, sock: socket.socket) -> None:
        self.connection = SSL.Connection(context, sock)
        self.connection.set_accept_state()

    def handshake(self) -> None:
        self.connection.do_handshake()

    def read(self, size: int) -> bytes:
        received = b""
        while len(received) < size:
            received += self.connection.recv(READ_SIZE)
        return received

    def write(self, data: bytes) -> None:
        self.connection.sendall(data)


Server = Callable[[SSL.Context, socket.socket], MemoryBios | SocketBio]


def contexts(folder: Path) -> tuple[SSL.Context, ssl.SSLContext, object]:
    """The server's context, the client's, and the server's SNI callback (kept alive with
    the context: OpenSSL calls it)."""
    for filename, content in dev_files(build_dev_pki()).items():
        (folder / filename).write_bytes(content)
    trusted = tuple(x509.load_pem_x509_certificates((folder / "client-ca.pem").read_bytes()))
    server, names = build_context(TlsSettings(
        certfile=folder / "server.pem", keyfile=folder / "server.key",
        client_auth_mode="require", trusted=trusted, partial_chain=False, verify_depth=4,
        advertised_ca=trusted, refuse_in_handshake=False, public_names=()))
    client = ssl.create_default_context(cafile=str(folder / "ca.pem"))
    client.load_cert_chain(folder / "client-chain.pem", folder / "client.key")
    return server, client, names


def _client(client_context: ssl.SSLContext, sock: socket.socket, request: bytes,
            exchanges: int) -> None:
    with client_context.wrap_socket(sock, server_hostname="localhost") as tls:
        for _ in range(exchanges):
            tls.sendall(request)
            answered = 0
            while answered < len(ANSWER):
                answered += len(tls.recv(READ_SIZE))
        with contextlib.suppress(OSError):  # until the server closes (its tickets read)
            while tls.recv(READ_SIZE):
                pass


def server_cpu(server: Server, contexts_: tuple[SSL.Context, ssl.SSLContext, object],
               request: bytes, connections: int, exchanges: int) -> float:
    """The server thread's CPU seconds for ``connections`` handshakes of ``exchanges``."""
    server_context, client_context, _names = contexts_
    used = 0.0
    for _ in range(connections):
        ours, theirs = socket.socketpair()
        client = threading.Thread(target=_client,
                                  args=(client_context, theirs, request, exchanges))
        client.start()
        started = time.thread_time()
        end = server(server_context, ours)
        end.handshake()
        for _ in range(exchanges):
            end.read(len(request))
            end.write(ANSWER)
        used += time.thread_time() - started
        ours.close()
        client.join()
    return used


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--exchanges", type=int, default=2000)
    parser.add_argument("--handshakes", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    request = PAYLOAD.read_bytes()
    with tempfile.TemporaryDirectory(prefix="omgate-tls-bio-") as temp:
        both = contexts(Path(temp))
        modes: dict[str, Server] = {"memory BIOs": MemoryBios, "socket BIO": SocketBio}
        exchange: dict[str, list[float]] = {name: [] for name in modes}
        handshake: dict[str, list[float]] = {name: [] for name in modes}
        for _ in range(args.rounds):  # interleaved: the machine's drift falls on both
            for name, server in modes.items():
                exchange[name].append(server_cpu(server, both, request, 1, args.exchanges)
                                      / args.exchanges)
                handshake[name].append(server_cpu(server, both, request, args.handshakes, 0)
                                       / args.handshakes)
    print(json.dumps({name: {"us_per_exchange": round(min(exchange[name]) * 1e6, 1),
                             "us_per_handshake": round(min(handshake[name]) * 1e6, 1)}
                      for name in modes}, indent=2))


if __name__ == "__main__":
    main()
