"""The TLS front door of a real `omgate serve`: failures, refusals, concurrency, rotation."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import ssl
import time

import httpx
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from harness import PAYLOADS, SOAP_HEADERS, is_ack, ssl_context

from service.tools.pki import issue, name, new_key

BODY = (PAYLOADS / "amplabs-create_account.xml").read_bytes()
REQUEST = (b"POST /salesforce/outbound HTTP/1.1\r\nHost: localhost\r\n"
           b"Content-Type: text/xml; charset=utf-8\r\nConnection: close\r\n"
           + f"Content-Length: {len(BODY)}\r\n\r\n".encode() + BODY)


def raw_exchange(port: int, context: ssl.SSLContext, server_hostname: str = "localhost",
                 data: bytes = REQUEST) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname=server_hostname) as tls:
        tls.sendall(data)
        chunks = []
        while chunk := tls.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def failed_reasons(server) -> list[str]:
    return [event["reason"] for event in server.events("tls.handshake_failed")]


def insecure_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_handshake_failures_are_logged_and_harm_nobody(omgate_server):
    server = omgate_server({"server": {"handshake_timeout": 1}})
    port = server.https_port

    old = ssl_context(server.ca_path)
    old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    with pytest.raises((ssl.SSLError, OSError)):
        raw_exchange(port, old)
    server.wait_for("tls.handshake_failed", lambda e: e["reason"] == "protocol_version")

    weak = ssl_context(server.ca_path)
    weak.maximum_version = ssl.TLSVersion.TLSv1_2
    weak.set_ciphers("AES128-SHA")
    with pytest.raises((ssl.SSLError, OSError)):
        raw_exchange(port, weak)
    server.wait_for("tls.handshake_failed", lambda e: e["reason"] == "no_shared_cipher")

    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(b"POST /salesforce/outbound HTTP/1.1\r\nHost: localhost\r\n\r\n")
        answer = raw.recv(4096)
    assert answer.startswith(b"HTTP/1.1 400 Bad Request")
    assert b"use an https:// URL" in answer
    server.wait_for("tls.handshake_failed", lambda e: e["reason"] == "plain_http")

    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(b"\x16\x03\x01\x00\x10" + b"\xff" * 16)  # a whole record of noise
        raw.settimeout(5)
        with contextlib.suppress(OSError):  # a reset and a close are both fine answers
            raw.recv(100)
    server.wait_for("tls.handshake_failed", lambda e: e["reason"] in ("not_tls", "tls_error"))

    with pytest.raises(ssl.SSLError, match=r"UNRECOGNIZED_NAME|unrecognized name"):
        raw_exchange(port, insecure_context(), server_hostname="evil.example")
    event = server.wait_for("tls.handshake_failed", lambda e: e["reason"] == "unknown_sni")
    assert "evil.example" in event["detail"]

    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.settimeout(5)
        started = time.monotonic()
        assert raw.recv(100) == b""  # the server gives up on the silent client
        assert time.monotonic() - started < 4
    event = server.wait_for("tls.handshake_failed", lambda e: e["reason"] == "timeout")
    assert event["peer"].startswith("127.0.0.1:")
    assert event["stage"] == "handshake"

    assert is_ack(server.post(BODY))


def test_two_hundred_connections_a_third_hostile_leave_valid_clients_served(omgate_server,
                                                                             client_pki):
    server = omgate_server({"client_auth": {"mode": "require"},
                            "server": {"handshake_timeout": 3}})
    context = ssl_context(server.ca_path)
    case = client_pki.cases["valid"]
    context.load_cert_chain(case.chain, case.key)

    async def valid() -> bool:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.https_port,
                                                       ssl=context, server_hostname="localhost")
        writer.write(REQUEST)
        answer = await asyncio.wait_for(reader.read(), 30)
        writer.close()
        return b"<Ack>true</Ack>" in answer

    async def hostile(kind: int) -> None:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.https_port)
            writer.write(os.urandom(512) if kind == 0 else b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            await writer.drain()
            await asyncio.wait_for(reader.read(), 10)
            writer.close()
        except (OSError, TimeoutError):
            pass

    async def crowd() -> list[bool]:
        tasks = []
        for index in range(200):
            if index % 3 == 0:
                tasks.append(asyncio.create_task(hostile(index % 2)))
            else:
                tasks.append(asyncio.create_task(valid()))
        results = await asyncio.gather(*tasks)
        return [result for result in results if result is not None]

    outcomes = asyncio.run(crowd())
    assert len(outcomes) == 133
    assert all(outcomes)
    assert is_ack(server.post(BODY, cert=case))


@pytest.mark.parametrize(("case", "alert"), [
    ("none", "CERTIFICATE_REQUIRED|certificate required"),
    ("untrusted", "UNKNOWN_CA|unknown ca"),
    ("expired", "CERTIFICATE_EXPIRED|certificate expired"),
    ("leaf_only", "UNKNOWN_CA|unknown ca"),
])
def test_handshake_refusals_send_an_alert_and_log_the_chain(omgate_server, client_pki, case,
                                                            alert):
    server = omgate_server({"client_auth": {"mode": "require", "reject_with": "handshake"}})
    context = ssl_context(server.ca_path)
    valid = client_pki.cases["valid"]
    context.load_cert_chain(valid.chain, valid.key)
    assert b"<Ack>true</Ack>" in raw_exchange(server.https_port, context)

    context = ssl_context(server.ca_path)
    if case != "none":
        context.load_cert_chain(client_pki.cases[case].chain, client_pki.cases[case].key)
    with pytest.raises(ssl.SSLError, match=alert):
        raw_exchange(server.https_port, context)
    failed = server.wait_for("tls.handshake_failed")
    assert failed["reason"] in ("no_client_cert", "client_cert_rejected")
    decision = server.wait_for("client_auth.decision", lambda e: e["outcome"] == "reject")
    assert decision["enforced"] is True
    if case == "none":
        assert [f["code"] for f in decision["findings"]] == ["no_client_cert"]
    else:
        sent = x509.load_pem_x509_certificates(client_pki.cases[case].chain.read_bytes())
        assert [c["subject"] for c in decision["chain"]] == [
            c.subject.rfc4514_string() for c in sent]


def _server_identity(folder, kind: str):
    ca = issue(name(f"{kind} test server CA"), ca=True)
    server = issue(name("localhost"), issuer=ca, key=new_key(kind), dns_names=("localhost",),
                   usages=(ExtendedKeyUsageOID.SERVER_AUTH,))
    (folder / f"{kind}-ca.pem").write_bytes(ca.pem())
    (folder / f"{kind}-server.pem").write_bytes(server.pem())
    (folder / f"{kind}-server.key").write_bytes(server.key_pem())
    return folder / f"{kind}-ca.pem", folder / f"{kind}-server.pem", folder / f"{kind}-server.key"


def served_certificate(port: int, ca) -> x509.Certificate:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            ssl_context(ca).wrap_socket(raw, server_hostname="localhost") as tls:
        return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_rsa_and_ecdsa_server_keys(omgate_server, tmp_path, kind):
    ca, cert, key = _server_identity(tmp_path, kind)
    server = omgate_server({"server": {"certfile": cert, "keyfile": key}})
    served = served_certificate(server.https_port, ca)
    assert served == x509.load_pem_x509_certificate(cert.read_bytes())
    response = httpx.post(f"{server.url}/salesforce/outbound", content=BODY,
                          headers=SOAP_HEADERS, verify=ssl_context(ca))
    assert is_ack(response)


def test_certificate_rotation_on_sighup_and_on_file_change(omgate_server, tmp_path):
    ca, cert, key = _server_identity(tmp_path, "ec")
    live_cert, live_key = tmp_path / "live.pem", tmp_path / "live.key"
    live_cert.write_bytes(cert.read_bytes())
    live_key.write_bytes(key.read_bytes())
    server = omgate_server({"server": {"certfile": live_cert, "keyfile": live_key,
                                       "reload_check_seconds": 1}})
    first = served_certificate(server.https_port, ca)

    (tmp_path / "second").mkdir()
    second_ca, second_cert, second_key = _server_identity(tmp_path / "second", "ec")
    live_cert.write_bytes(second_cert.read_bytes())
    live_key.write_bytes(second_key.read_bytes())
    server.process.send_signal(signal.SIGHUP)
    server.wait_for("tls.reloaded")
    assert served_certificate(server.https_port, second_ca) != first

    live_cert.write_bytes(b"not a certificate")
    server.process.send_signal(signal.SIGHUP)
    failed = server.wait_for("tls.reload_failed")
    assert "certfile" in failed["reason"]
    assert served_certificate(server.https_port, second_ca).serial_number == (
        x509.load_pem_x509_certificate(second_cert.read_bytes()).serial_number)

    live_cert.write_bytes(cert.read_bytes())
    live_key.write_bytes(key.read_bytes())
    server.wait_for("tls.reloaded", lambda e: e["trigger"] == "file_change", timeout=10)
    assert served_certificate(server.https_port, ca) == first
