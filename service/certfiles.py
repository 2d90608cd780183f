"""Reading certificate files and folders, with errors that name the key and the file.

A file may hold PEM certificates, one DER certificate, or a PKCS#7 bundle (``.p7b``,
``.p7c``, PEM or DER): the forms consoles and CAs offer for download.
"""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs7

FORMS = "PEM, DER or PKCS#7"
PEM_CERTIFICATE = b"-----BEGIN CERTIFICATE-----"
PEM_PKCS7 = b"-----BEGIN PKCS7-----"


class CertificateFileError(Exception):
    pass


def _leaf_first(bundle: list[x509.Certificate]) -> list[x509.Certificate]:
    """A PKCS#7 bundle's certificates (a SET: its order means nothing) as a chain: the one
    that issues no other first, then each one's issuer; the rest after, as they came."""
    issuers = {c.issuer for c in bundle if c.issuer != c.subject}
    leaves = [c for c in bundle if c.subject not in issuers]
    chain = leaves[:1]
    while chain:
        issuer = next((c for c in bundle if c.subject == chain[-1].issuer and c not in chain),
                      None)
        if issuer is None:
            break
        chain.append(issuer)
    return chain + [c for c in bundle if c not in chain]


def _parse(data: bytes) -> list[x509.Certificate] | None:
    """The certificates ``data`` holds, in its order (a PKCS#7 bundle's leaf first); None
    when it holds none in any form. A PEM file that is broken raises ValueError."""
    if PEM_PKCS7 in data:
        return _leaf_first(pkcs7.load_pem_pkcs7_certificates(data))
    if PEM_CERTIFICATE in data:
        return x509.load_pem_x509_certificates(data)
    try:
        return [x509.load_der_x509_certificate(data)]
    except ValueError:
        pass
    try:
        return _leaf_first(pkcs7.load_der_pkcs7_certificates(data))
    except ValueError:
        return None


def load_certificates(path: Path, key: str) -> list[x509.Certificate]:
    """Every certificate in a file, or in the certificate files of a folder (others in it
    are skipped)."""
    if not path.exists():
        raise CertificateFileError(f"{key}: file not found: {path}")
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    certificates: list[x509.Certificate] = []
    for file in files:
        try:
            data = file.read_bytes()
        except OSError as error:
            raise CertificateFileError(f"{key}: cannot read {file}: {error.strerror}") from None
        try:
            found = _parse(data)
        except ValueError as error:
            raise CertificateFileError(f"{key}: {file} is not valid PEM: {error}") from None
        if found is None and not path.is_dir():
            raise CertificateFileError(f"{key}: {file} holds no certificate ({FORMS})")
        certificates.extend(found or ())
    if not certificates:
        raise CertificateFileError(f"{key}: {path} holds no certificate ({FORMS})")
    return certificates
