"""What tests/unit/test_tls_listener.py, tests/system/test_tls_listener_system.py and
tests/system/test_observatory_hostile.py share."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from service.tools.pki import issue, name


def pems(path) -> list[str]:
    return [c.public_bytes(Encoding.PEM).decode()
            for c in x509.load_pem_x509_certificates(path.read_bytes())]


REQUEST = b"GET /echo HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"


def bulky_certificate(index: int, size: int) -> bytes:
    """A self-signed certificate carrying ``size`` bytes in an extension nobody knows."""
    filler = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.55555.1"),
                                        b"\x04\x83" + size.to_bytes(3, "big") + b"x" * size)
    return issue(name(f"bulky {index}"), extensions=((filler, False),)).certificate.public_bytes(
        Encoding.DER)
