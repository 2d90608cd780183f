"""Certificates with extensions no certificate builder writes: repeated, malformed, truncated.

cryptography's ``CertificateBuilder`` refuses a repeated extension and encodes every value
it is given correctly, so a certificate whose extensions are broken is assembled here: a
well-formed certificate is built, its ``tbsCertificate`` is taken apart, its extensions are
replaced by the raw ones wanted, and the result is signed again (a signature that verifies,
so that only the extensions are wrong).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

SEQUENCE, OCTET_STRING, BOOLEAN, OID, BIT_STRING = 0x30, 0x04, 0x01, 0x06, 0x03
EXTENSIONS_TAG = 0xA3  # [3] EXPLICIT in tbsCertificate
ECDSA_SHA256 = bytes.fromhex("300a06082a8648ce3d040302")


@dataclass(frozen=True)
class RawExtension:
    """One extension as it will be encoded: any OID, any criticality, any value bytes."""

    oid: str
    value: bytes
    critical: bool = False


def der_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    octets = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(octets)]) + octets


def element(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + der_length(len(content)) + content


def oid_der(dotted: str) -> bytes:
    first, second, *rest = (int(arc) for arc in dotted.split("."))
    body = bytearray()
    for arc in (40 * first + second, *rest):
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body += bytes(reversed(chunk))
    return element(OID, bytes(body))


def children(der: bytes) -> list[bytes]:
    """The encoded elements (tag, length and content) inside one constructed element."""
    header = 2 if der[1] < 0x80 else 2 + (der[1] & 0x7F)
    found, position = [], header
    while position < len(der):
        first = der[position + 1]
        if first < 0x80:
            size, start = first, position + 2
        else:
            count = first & 0x7F
            size = int.from_bytes(der[position + 2:position + 2 + count], "big")
            start = position + 2 + count
        found.append(der[position:start + size])
        position = start + size
    return found


def encode_extensions(extensions: Sequence[RawExtension]) -> bytes:
    encoded = b"".join(
        element(SEQUENCE, oid_der(extension.oid)
                + (element(BOOLEAN, b"\xff") if extension.critical else b"")
                + element(OCTET_STRING, extension.value))
        for extension in extensions)
    return element(EXTENSIONS_TAG, element(SEQUENCE, encoded))


def _name(text: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])


def certificate_with(extensions: Sequence[RawExtension], *, subject: str = "malformed",
                     issuer: str = "malformed CA",
                     key: ec.EllipticCurvePrivateKey | None = None,
                     signer: ec.EllipticCurvePrivateKey | None = None) -> x509.Certificate:
    """A certificate carrying exactly ``extensions``, signed by ``signer`` (ECDSA P-256)."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    signer = signer or key
    now = dt.datetime.now(dt.UTC)
    template = (x509.CertificateBuilder().subject_name(_name(subject))
                .issuer_name(_name(issuer)).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(days=1))
                .not_valid_after(now + dt.timedelta(days=30))
                .sign(signer, hashes.SHA256()))
    parts = [part for part in children(template.tbs_certificate_bytes)
             if part[0] != EXTENSIONS_TAG]
    tbs = element(SEQUENCE, b"".join(parts) + (encode_extensions(extensions)
                                               if extensions else b""))
    signature = signer.sign(tbs, ec.ECDSA(hashes.SHA256()))
    der = element(SEQUENCE, tbs + ECDSA_SHA256 + element(BIT_STRING, b"\x00" + signature))
    return x509.load_der_x509_certificate(der)
