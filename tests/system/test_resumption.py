"""Resumed TLS sessions over real sockets: judged on the chain they authenticated with, and
no handshake flood can make the sender's next resumption fail."""

from __future__ import annotations

import socket
import ssl
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from harness import PAYLOADS, ssl_context

from service.tools.pki import issue, name

BODY = (PAYLOADS / "amplabs-create_account.xml").read_bytes()
REQUEST = (b"POST /salesforce/outbound HTTP/1.1\r\nHost: localhost\r\n"
           b"Content-Type: text/xml; charset=utf-8\r\nConnection: close\r\n"
           + f"Content-Length: {len(BODY)}\r\n\r\n".encode() + BODY)
FLOOD = 4200  # more than any memory of 4,096 chains keyed by leaf could hold


def exchange(port: int, context: ssl.SSLContext, session: ssl.SSLSession | None = None
             ) -> tuple[bytes, ssl.SSLSession | None, bool]:
    """One request on a new connection: the answer, the session to resume, whether it was."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as raw, \
            context.wrap_socket(raw, server_hostname="localhost", session=session) as tls:
        tls.sendall(REQUEST)
        chunks = []
        while chunk := tls.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks), tls.session, tls.session_reused


def throwaway_contexts(folder: Path, server, count: int) -> list[ssl.SSLContext]:
    """Clients each with a self-signed leaf of its own (sharing one key: only the
    certificates must differ)."""
    first = issue(name("junk 0", "Flood"))
    key = folder / "junk.key"
    key.write_bytes(first.key_pem())
    contexts = []
    for number in range(count):
        leaf = issue(name(f"junk {number}", "Flood"), key=first.key)
        chain = folder / f"junk-{number}.pem"
        chain.write_bytes(leaf.pem())
        context = ssl_context(server.ca_path)
        context.load_cert_chain(chain, key)
        contexts.append(context)
    return contexts


def handshake_only(port: int, context: ssl.SSLContext) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as raw, \
            context.wrap_socket(raw, server_hostname="localhost"):
        pass


def test_a_handshake_flood_never_costs_the_sender_its_next_resumption(omgate_server,
                                                                      client_pki, tmp_path):
    server = omgate_server({"client_auth": {"mode": "require"},
                            "logging": {"level": "warning"}})
    sender = ssl_context(server.ca_path)
    sender.load_cert_chain(client_pki.cases["valid"].chain, client_pki.cases["valid"].key)
    answer, session, _ = exchange(server.https_port, sender)
    assert answer.startswith(b"HTTP/1.1 200"), answer
    _, session, reused = exchange(server.https_port, sender, session)
    assert reused  # sessions do resume

    flood = throwaway_contexts(tmp_path, server, FLOOD)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda context: handshake_only(server.https_port, context), flood))

    answer, _, _ = exchange(server.https_port, sender, session)
    assert answer.startswith(b"HTTP/1.1 200"), answer  # resumed with its chain, or in full


def test_a_resumed_session_is_judged_on_its_whole_chain(omgate_server, client_pki):
    server = omgate_server({"client_auth": {"mode": "require"}})
    sender = ssl_context(server.ca_path)
    sender.load_cert_chain(client_pki.cases["valid"].chain, client_pki.cases["valid"].key)
    _, session, _ = exchange(server.https_port, sender)
    answer, _, reused = exchange(server.https_port, sender, session)
    assert reused
    assert answer.startswith(b"HTTP/1.1 200"), answer
    resumed = server.wait_for("client_auth.decision", lambda e: e["tls"]["resumed"])
    assert resumed["outcome"] == "accept" and resumed["findings"] == []
