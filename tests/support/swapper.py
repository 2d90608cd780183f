"""A client that presents someone else's public chain without its key: a relay that swaps
the Certificate message of a real TLS 1.2 handshake on its way to omgate."""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from harness import ssl_context


def _records(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """Whole TLS records in ``data`` as (type, fragment), and what is left over."""
    records = []
    while len(data) >= 5 and len(data) >= 5 + int.from_bytes(data[3:5], "big"):
        length = int.from_bytes(data[3:5], "big")
        records.append((data[0], data[5:5 + length]))
        data = data[5 + length:]
    return records, data


def _certificate_message(chain: list[x509.Certificate]) -> bytes:
    entries = b"".join(len(der).to_bytes(3, "big") + der for der in (
        certificate.public_bytes(serialization.Encoding.DER) for certificate in chain))
    body = len(entries).to_bytes(3, "big") + entries
    return b"\x0b" + len(body).to_bytes(3, "big") + body


class CertificateSwapper:
    """A TCP relay that replaces the client's TLS 1.2 Certificate message with ``chain``:
    the server sees that chain, and the client's CertificateVerify, made with its own key,
    cannot verify with the key in it."""

    def __init__(self, target_port: int, chain: list[x509.Certificate]) -> None:
        self.target_port = target_port
        self.replacement = _certificate_message(chain)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        client, _ = self.listener.accept()
        server = socket.create_connection(("127.0.0.1", self.target_port))
        for sock in (client, server):
            sock.settimeout(10)
        threading.Thread(target=self._pipe, args=(server, client), daemon=True).start()
        self._rewrite(client, server)

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            sink.close()

    def _rewrite(self, client: socket.socket, server: socket.socket) -> None:
        pending, handshake = b"", b""
        try:
            while data := client.recv(65536):
                records, pending = _records(pending + data)
                for content_type, fragment in records:
                    if content_type == 22 and handshake is not None:
                        handshake = self._forward_handshake(server, handshake + fragment)
                        continue
                    handshake = None  # after ChangeCipherSpec, records are encrypted
                    server.sendall(bytes([content_type]) + b"\x03\x03"
                                   + len(fragment).to_bytes(2, "big") + fragment)
        except OSError:
            pass
        finally:
            server.close()

    def _forward_handshake(self, server: socket.socket, buffered: bytes) -> bytes:
        """Send the whole handshake messages in ``buffered`` (the Certificate swapped)."""
        while len(buffered) >= 4 and len(buffered) >= 4 + int.from_bytes(buffered[1:4], "big"):
            size = 4 + int.from_bytes(buffered[1:4], "big")
            message, buffered = buffered[:size], buffered[size:]
            if message[0] == 11:
                message = self.replacement
            for start in range(0, len(message), 16384):
                piece = message[start:start + 16384]
                server.sendall(b"\x16\x03\x03" + len(piece).to_bytes(2, "big") + piece)
        return buffered

    def close(self) -> None:
        self.listener.close()


def present_without_its_key(server, victim: list[x509.Certificate], own_chain: Path,
                            own_key: Path) -> None:
    """Present ``victim`` (someone else's public chain) in place of the client's own, then
    fail CertificateVerify, as whoever replays a chain without its key does."""
    swapper = CertificateSwapper(server.https_port, victim)
    context = ssl_context(server.ca_path)
    context.maximum_version = ssl.TLSVersion.TLSv1_2  # the Certificate message is in clear
    context.load_cert_chain(own_chain, own_key)
    try:
        with pytest.raises((ssl.SSLError, OSError)), \
                socket.create_connection(("127.0.0.1", swapper.port), timeout=10) as raw, \
                context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            tls.recv(1)
    finally:
        swapper.close()
