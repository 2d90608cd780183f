"""Reading certificate and key files, with errors that name the key, the file, what it holds
and how to convert it.

A file of certificates to trust or inspect may hold PEM certificates, one DER certificate,
or a PKCS#7 bundle (``.p7b``, ``.p7c``, PEM or DER): the forms consoles and CAs offer for
download. A server's own certificate and key (``load_server_identity``, the one loader of
``omgate check`` and ``omgate serve``) must be PEM, as nginx and Apache want them: a file
in another form is refused with the ``openssl`` command that converts it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import (
    load_der_private_key,
    load_pem_private_key,
    pkcs7,
    pkcs12,
)

FORMS = "PEM, DER or PKCS#7"
PEM_CERTIFICATE = b"-----BEGIN CERTIFICATE-----"
PEM_PKCS7 = b"-----BEGIN PKCS7-----"
PEM_PRIVATE_KEY = b"PRIVATE KEY-----"  # PKCS#8 and the traditional RSA, EC and DSA forms
PEM_ENCRYPTED = (b"-----BEGIN ENCRYPTED PRIVATE KEY-----", b"Proc-Type: 4,ENCRYPTED")
# The private keys pyOpenSSL can use in TLS (PKey.from_cryptography_key); a PEM file may hold
# others (X25519, ML-DSA, ...), which no certificate here can present.
PresentableKey = (rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
                  | ed448.Ed448PrivateKey | dsa.DSAPrivateKey)


class CertificateFileError(Exception):
    pass


def _labelled(key: str, text: str) -> str:
    """``key: text``; a command's positional argument has no key, the file names itself."""
    return f"{key}: {text}" if key else text


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


def read_file(path: Path, key: str) -> bytes:
    """The bytes of ``path``; errors name ``key`` (who gave the path) and the file."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CertificateFileError(_labelled(key, f"{path}: file not found")) from None
    except IsADirectoryError:
        raise CertificateFileError(_labelled(key, f"{path} is a folder, not a file")) from None
    except OSError as error:
        raise CertificateFileError(_labelled(key, f"cannot read {path}: {error.strerror}")) \
            from None


def load_certificates(path: Path, key: str) -> list[x509.Certificate]:
    """Every certificate in a file, or in the certificate files of a folder (others in it
    are skipped). ``key`` names who gave the path in errors ("" for a command's argument)."""
    if not path.exists():
        raise CertificateFileError(_labelled(key, f"{path}: file not found"))
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    certificates: list[x509.Certificate] = []
    for file in files:
        data = read_file(file, key)
        try:
            found = _parse(data)
        except ValueError as error:
            raise CertificateFileError(_labelled(key, f"{file} is not valid PEM: {error}")) \
                from None
        if found is None and not path.is_dir():
            raise CertificateFileError(_labelled(key, f"{file} holds no certificate ({FORMS})"))
        certificates.extend(found or ())
    if not certificates:
        raise CertificateFileError(_labelled(key, f"{path} holds no certificate ({FORMS})"))
    return certificates


# ---------------------------------------------------------------------------
# What a file holds, for the files that must be PEM

Holding = Literal["pem_certificates", "pem_private_key", "encrypted_pem_key", "pkcs7_pem",
                  "der_certificate", "pkcs7_der", "der_private_key", "pkcs12", "unknown"]

# A PKCS#12 file (RFC 7292) is a DER SEQUENCE whose first element is the INTEGER 3; a
# password-protected one cannot be opened to be sure, so its first bytes are what tell.
_PKCS12_VERSION = b"\x02\x01\x03"


def _is_pkcs12(data: bytes) -> bool:
    try:
        pkcs12.load_key_and_certificates(data, None)
    except ValueError:
        return data[:1] == b"\x30" and _PKCS12_VERSION in data[2:8]
    return True


def holding(data: bytes) -> Holding:
    """The form of what ``data`` holds, as far as certificate and key files go."""
    if PEM_PKCS7 in data:
        return "pkcs7_pem"
    if PEM_CERTIFICATE in data:
        return "pem_certificates"
    if any(marker in data for marker in PEM_ENCRYPTED):
        return "encrypted_pem_key"
    if PEM_PRIVATE_KEY in data:
        return "pem_private_key"
    try:
        x509.load_der_x509_certificate(data)
        return "der_certificate"
    except ValueError:
        pass
    try:
        pkcs7.load_der_pkcs7_certificates(data)
        return "pkcs7_der"
    except ValueError:
        pass
    try:
        load_der_private_key(data, password=None)
        return "der_private_key"
    except (ValueError, TypeError):
        pass
    return "pkcs12" if _is_pkcs12(data) else "unknown"


def _stem(path: Path) -> Path:
    return path.with_suffix("")


def _certificate_advice(path: Path, held: Holding) -> str:
    """What ``path`` holds, when it is not PEM certificates, and how to make it so."""
    pem = f"{_stem(path)}.pem"
    match held:
        case "der_certificate":
            return (f"it holds one certificate in DER (binary) form; omgate reads PEM. Convert "
                    f"it with `openssl x509 -inform DER -in {path} -out {pem}`, append the "
                    "intermediates after it (PEM too), and name the new file")
        case "pkcs7_der" | "pkcs7_pem":
            inform = "-inform DER " if held == "pkcs7_der" else ""
            return (f"it holds a PKCS#7 bundle ({'DER' if inform else 'PEM'}); omgate reads "
                    f"PEM certificates. Convert it with `openssl pkcs7 {inform}-print_certs "
                    f"-in {path} -out {pem}`, check that the server certificate comes first "
                    "and its intermediates after it, and name the new file")
        case "pkcs12":
            return (f"it holds a PKCS#12 (.p12/.pfx) bundle; omgate reads PEM. Take the "
                    f"certificates out with `openssl pkcs12 -in {path} -nokeys -out {pem}` "
                    f"and the key with `openssl pkcs12 -in {path} -nocerts -nodes -out "
                    f"{_stem(path)}.key`, and name those files in certfile and keyfile")
        case "pem_private_key" | "encrypted_pem_key" | "der_private_key":
            return ("it holds a private key and no certificate: certfile and keyfile may be "
                    "swapped")
        case _:
            return ("it holds no certificate omgate recognises: give the server certificate "
                    "in PEM (-----BEGIN CERTIFICATE-----), followed by its intermediates")


def _key_advice(path: Path, held: Holding) -> str:
    """What ``path`` holds, when it is not an unencrypted PEM private key, and the fix."""
    key = f"{_stem(path)}.key" if path.suffix != ".key" else f"{_stem(path)}-plain.key"
    match held:
        case "encrypted_pem_key":
            return (f"the key is encrypted, and omgate cannot ask for its password. Write it "
                    f"unencrypted with `openssl pkey -in {path} -out {key}` (it asks for the "
                    f"password), keep it private (`chmod 600 {key}`), and name the new file")
        case "der_private_key":
            return (f"it holds the key in DER (binary) form; omgate reads PEM. Convert it with "
                    f"`openssl pkey -inform DER -in {path} -out {key}` and name the new file")
        case "pkcs12":
            return (f"it holds a PKCS#12 (.p12/.pfx) bundle; take the key out with `openssl "
                    f"pkcs12 -in {path} -nocerts -nodes -out {key}`")
        case "pem_certificates" | "der_certificate" | "pkcs7_der" | "pkcs7_pem":
            return ("it holds a certificate, not a private key: certfile and keyfile may be "
                    "swapped")
        case _:
            return ("it holds no private key omgate recognises: give the key in PEM "
                    "(-----BEGIN PRIVATE KEY-----)")


def load_pem_chain(path: Path, key: str) -> tuple[x509.Certificate, ...]:
    """The PEM certificates of ``path``, in its order; any other form is refused with what
    it holds and how to convert it."""
    data = read_file(path, key)
    held = holding(data)
    if held != "pem_certificates":
        raise CertificateFileError(_labelled(key, f"{path}: {_certificate_advice(path, held)}"))
    try:
        return tuple(x509.load_pem_x509_certificates(data))
    except ValueError as error:
        raise CertificateFileError(_labelled(key, f"{path} is not valid PEM: {error}")) \
            from None


def load_private_key(path: Path, key: str) -> PresentableKey:
    """The unencrypted PEM private key in ``path`` (a file may also hold certificates)."""
    data = read_file(path, key)
    try:
        loaded = load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as error:
        held = holding(data)
        advice = _key_advice(path, held) if held != "pem_private_key" else \
            f"its key cannot be read: {error}"
        raise CertificateFileError(_labelled(key, f"{path}: {advice}")) from None
    if not isinstance(loaded, PresentableKey):
        raise CertificateFileError(_labelled(
            key, f"{path} holds a key of type {type(loaded).__name__}, which cannot sign a "
                 "TLS handshake here: give an RSA, EC, Ed25519, Ed448 or DSA key"))
    return loaded


ServerFile = Literal["certfile", "keyfile"]
DEVELOPMENT_FILES = ("server.pem", "server.key")  # the names `omgate pki dev` writes


class ServerFileError(Exception):
    """[server] certfile or keyfile cannot be used; ``key`` says which."""

    def __init__(self, key: ServerFile, problem: str) -> None:
        super().__init__(f"[server] {key}: {problem}")
        self.key = key
        self.problem = problem


@dataclass(frozen=True)
class ServerIdentity:
    """The server's certificate chain as it is sent (leaf first) and the leaf's key."""

    chain: tuple[x509.Certificate, ...]
    key: PresentableKey

    @property
    def key_matches(self) -> bool:
        return bool(self.chain[0].public_key() == self.key.public_key())


def _missing(path: Path) -> str:
    if path.name in DEVELOPMENT_FILES:
        return (f"{path}: file not found (`omgate pki dev --out {path.parent}` writes "
                "development certificates there)")
    return f"{path}: file not found; correct the path, or put the file there"


def load_server_identity(certfile: Path, keyfile: Path) -> ServerIdentity:
    """[server] certfile and keyfile, read once for ``omgate check`` and ``omgate serve``
    alike (serve hands what is read here to OpenSSL). The key's match with the certificate
    is left to the caller: check reports it, serve refuses it."""
    files: tuple[tuple[ServerFile, Path], ...] = (("certfile", certfile), ("keyfile", keyfile))
    for name, path in files:
        if not path.exists():
            raise ServerFileError(name, _missing(path))
    try:
        chain = load_pem_chain(certfile, "")
    except CertificateFileError as error:
        raise ServerFileError("certfile", str(error)) from None
    try:
        key = load_private_key(keyfile, "")
    except CertificateFileError as error:
        raise ServerFileError("keyfile", str(error)) from None
    return ServerIdentity(chain, key)
