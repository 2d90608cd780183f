"""omgate probe's reading of what a server sends, without a socket."""

from __future__ import annotations

import datetime as dt
import socket
import threading
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID
from OpenSSL import crypto

from service.tools.probe import ca_name_text
from service.tools.tlsclient import HttpClient, PlainTransport


def _name(*attributes: x509.NameAttribute) -> crypto.X509Name:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(list(attributes))
    now = dt.datetime.now(dt.UTC)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                   .public_key(key.public_key()).serial_number(1).not_valid_before(now)
                   .not_valid_after(now + dt.timedelta(days=1)).sign(key, hashes.SHA256()))
    return crypto.X509.from_cryptography(certificate).get_subject()


def test_a_ca_name_is_written_in_rfc_4514_order():
    name = _name(x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example"),
                 x509.NameAttribute(NameOID.COMMON_NAME, "Example CA"))
    assert ca_name_text(name) == "CN=Example CA,O=Example"


def test_a_ca_name_that_is_not_utf_8_is_shown_escaped_not_a_crash():
    """A server chooses its CA names' encoding: a BMPString of "Café" made the probe
    stop with a usage error (an attacker's review)."""
    name = _name(x509.NameAttribute(NameOID.COMMON_NAME, "Café CA", _type=_ASN1Type.BMPString))
    assert ca_name_text(name).startswith("CN=") and "\\x" in ca_name_text(name)


def _trickling_server(answer: bytes, step: float) -> tuple[int, threading.Thread]:
    """A plain HTTP server on a free loopback port that reads one request, then sends
    ``answer`` a byte every ``step`` seconds."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        connection, _ = listener.accept()
        try:
            connection.settimeout(5)
            data = b""
            while b"\r\n\r\n" not in data:
                data += connection.recv(65536)
            for byte in answer:
                connection.sendall(bytes([byte]))
                time.sleep(step)
        except OSError:
            pass
        finally:
            connection.close()
            listener.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return port, thread


def test_an_answer_trickled_a_byte_at_a_time_is_given_up_at_the_exchanges_deadline():
    """Each read waited its own timeout: a server sending a byte just within it held the
    tool for as long as it liked (an attacker's review)."""
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    port, thread = _trickling_server(answer, step=0.1)
    client = HttpClient(PlainTransport(socket.create_connection(("127.0.0.1", port))),
                        "127.0.0.1", timeout=1.0)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        client.post("/x", b"<x/>", [])
    assert time.monotonic() - started < 2.5
    client.close()
    thread.join(10)
