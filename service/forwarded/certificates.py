"""Client certificates as load balancers forward them in HTTP headers, sans-IO.

Each format turns header values into the chain the balancer saw, leaf first:

- ``xfcc``: Envoy's ``X-Forwarded-Client-Cert`` (the last element is the nearest hop's;
  read strictly, see :mod:`service.forwarded.xfcc`);
- ``aws-alb``: ``X-Amzn-Mtls-Clientcert`` (passthrough, URL-encoded PEM chain) or, in
  verify mode, ``X-Amzn-Mtls-Clientcert-Leaf`` with the ``-Serial-Number`` check;
- ``pem-header:<Name>``: nginx ``$ssl_client_escaped_cert``, Apache
  ``%{SSL_CLIENT_CERT}s`` (line breaks turned to spaces, ``(null)`` for none), HAProxy
  ``%[ssl_c_der,base64]``;
- ``traefik``: ``X-Forwarded-Tls-Client-Cert`` (URL-escaped, comma-joined base64 DER);
- ``azure``: ``X-ARR-ClientCert`` (base64 DER of the leaf);
- ``rfc9440``: ``Client-Cert`` and ``Client-Cert-Chain`` (RFC 8941 byte sequences).

A value that cannot be read raises :class:`ForwardedCertError` with the reason.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import unquote

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from service.forwarded.xfcc import SPELLING, XfccElement, XfccKey, XfccSyntaxError, parse_xfcc

MAX_HEADER_BYTES = 64 * 1024
MAX_CERTIFICATES = 10
_PEM_BEGIN = "-----BEGIN CERTIFICATE-----"
_PEM_END = "-----END CERTIFICATE-----"
_Item = TypeVar("_Item")


class ForwardedCertError(ValueError):
    """A forwarded certificate header that cannot be read; the message says why."""


@dataclass(frozen=True)
class ForwardedFormat:
    name: str
    headers: tuple[str, ...]  # lower case, the ones this format reads
    parse: Callable[[Mapping[str, str]], tuple[x509.Certificate, ...]]
    # Of ``headers``, the lists, which may come in several lines (RFC 9110 section 5.3);
    # any other comes at most once.
    lists: frozenset[str] = frozenset()


def _limit(name: str, value: str) -> str:
    if len(value) > MAX_HEADER_BYTES:
        raise ForwardedCertError(f"{name} is {len(value)} bytes, more than {MAX_HEADER_BYTES}")
    return value


def _der(data: bytes, what: str) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(data)
    except ValueError as error:
        raise ForwardedCertError(f"{what} is not a DER certificate: {error}") from None


def _base64_der(text: str, what: str) -> x509.Certificate:
    cleaned = re.sub(r"\s+", "", text)
    try:
        data = base64.b64decode(cleaned + "=" * (-len(cleaned) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ForwardedCertError(f"{what} is not base64") from None
    return _der(data, what)


def _pem_blocks(text: str) -> list[str]:
    """What lies between each BEGIN line and the first END line after it. Found with
    str.find, not a regular expression: a lazy pattern rescans the rest of the text from
    every BEGIN line that has no END line after it."""
    blocks: list[str] = []
    position = 0
    while (begin := text.find(_PEM_BEGIN, position)) >= 0:
        end = text.find(_PEM_END, begin + len(_PEM_BEGIN))
        if end < 0:
            break
        blocks.append(text[begin + len(_PEM_BEGIN):end])
        position = end + len(_PEM_END)
    return blocks


def pem_certificates(text: str, what: str) -> tuple[x509.Certificate, ...]:
    """PEM blocks, tolerating line breaks flattened to spaces or tabs (Apache, old nginx)."""
    blocks = _pem_blocks(text)
    if not blocks:
        raise ForwardedCertError(f"{what} holds no PEM certificate")
    return tuple(_base64_der(block, what) for block in _bounded(tuple(blocks), what))


def _one(certificates: tuple[x509.Certificate, ...], what: str) -> tuple[x509.Certificate]:
    """The one certificate a leaf header holds. More is no proxy's writing (nginx, Apache,
    HAProxy and ALB forward the leaf alone) but a client's, in front of what a proxy that
    appends to the same line (Apache's ``RequestHeader append``) added after it."""
    if len(certificates) != 1:
        raise ForwardedCertError(f"{what} holds {len(certificates)} certificates; the proxy "
                                 "forwards one, the client's leaf")
    return (certificates[0],)


def _bounded(items: tuple[_Item, ...], what: str) -> tuple[_Item, ...]:
    """``items`` (certificates, or their encodings before they are decoded) if they are
    at most MAX_CERTIFICATES."""
    if len(items) > MAX_CERTIFICATES:
        raise ForwardedCertError(f"{what} holds {len(items)} certificates, more than "
                                 f"{MAX_CERTIFICATES}")
    return items


# -- Envoy ---------------------------------------------------------------------------------

def _xfcc_certificates(element: XfccElement, key: XfccKey) -> tuple[x509.Certificate, ...]:
    value = element.value(key)
    if value is None:
        return ()
    what = f"XFCC {SPELLING[key]}"
    if not value.strip():
        raise ForwardedCertError(f"{what} is empty")
    return pem_certificates(unquote(value), what)


def _check_xfcc_hash(digest: str | None, leaf: x509.Certificate | None) -> None:
    if digest is None:
        return
    if not re.fullmatch(r"[0-9A-Fa-f]{64}", digest):
        raise ForwardedCertError("XFCC Hash is not a SHA-256 digest in hex")
    if leaf is not None and digest.lower() != hashlib.sha256(
            leaf.public_bytes(Encoding.DER)).hexdigest():
        raise ForwardedCertError("XFCC Hash does not match the certificate it came with")


def _xfcc(headers: Mapping[str, str]) -> tuple[x509.Certificate, ...]:
    """The chain in the nearest proxy's element (the last): its Chain, else its Cert."""
    value = headers.get("x-forwarded-client-cert")
    if not value:
        return ()
    try:
        nearest = parse_xfcc(_limit("X-Forwarded-Client-Cert", value))[-1]
    except XfccSyntaxError as error:
        raise ForwardedCertError(str(error)) from None
    cert = _xfcc_certificates(nearest, "cert")
    if len(cert) > 1:
        raise ForwardedCertError(f"XFCC Cert holds {len(cert)} certificates, not one")
    chain = _xfcc_certificates(nearest, "chain") or cert
    if cert and chain[0] != cert[0]:
        raise ForwardedCertError("XFCC Chain does not start with the Cert it came with")
    _check_xfcc_hash(nearest.value("hash"), chain[0] if chain else None)
    return chain


# -- AWS ALB -------------------------------------------------------------------------------

def _aws_alb(headers: Mapping[str, str]) -> tuple[x509.Certificate, ...]:
    passthrough = headers.get("x-amzn-mtls-clientcert")
    leaf_value = headers.get("x-amzn-mtls-clientcert-leaf")
    if passthrough and leaf_value:
        raise ForwardedCertError(
            "X-Amzn-Mtls-Clientcert (passthrough) and X-Amzn-Mtls-Clientcert-Leaf (verify): "
            "ALB sends one or the other, never both, so one of them is the client's")
    if passthrough:  # '+' is literal here: ALB leaves '+', '=' and '/' unencoded
        return pem_certificates(unquote(_limit("X-Amzn-Mtls-Clientcert", passthrough)),
                                "X-Amzn-Mtls-Clientcert")
    if not leaf_value:
        return ()
    leaf = _one(pem_certificates(unquote(_limit("X-Amzn-Mtls-Clientcert-Leaf", leaf_value)),
                                 "X-Amzn-Mtls-Clientcert-Leaf"), "X-Amzn-Mtls-Clientcert-Leaf")
    serial = headers.get("x-amzn-mtls-clientcert-serial-number", "").strip()
    if serial and not (re.fullmatch(r"[0-9A-Fa-f]+", serial)
                       and int(serial, 16) == leaf[0].serial_number):
        raise ForwardedCertError(
            "X-Amzn-Mtls-Clientcert-Serial-Number does not match the forwarded leaf")
    return leaf


# -- nginx, Apache, HAProxy ----------------------------------------------------------------

def pem_header(name: str) -> ForwardedFormat:
    header = name.lower()

    def parse(headers: Mapping[str, str]) -> tuple[x509.Certificate, ...]:
        value = _limit(name, headers.get(header, "")).strip()
        if value in ("", "(null)"):
            return ()
        if re.search(r"%[0-9A-Fa-f]{2}", value):  # PEM and base64 have no percent escapes
            value = unquote(value)  # nginx $ssl_client_escaped_cert
        if "-----BEGIN" in value:
            return _one(pem_certificates(value, name), name)
        return (_base64_der(value, name),)  # HAProxy %[ssl_c_der,base64]

    return ForwardedFormat(f"pem-header:{name}", (header,), parse)


# -- Traefik, Azure, RFC 9440 --------------------------------------------------------------

def _traefik(headers: Mapping[str, str]) -> tuple[x509.Certificate, ...]:
    value = headers.get("x-forwarded-tls-client-cert", "")
    if not value:
        return ()
    parts = unquote(_limit("X-Forwarded-Tls-Client-Cert", value)).split(",")
    return tuple(_base64_der(part, "X-Forwarded-Tls-Client-Cert") for part in _bounded(
        tuple(part for part in parts if part.strip()), "X-Forwarded-Tls-Client-Cert"))


def _azure(headers: Mapping[str, str]) -> tuple[x509.Certificate, ...]:
    value = headers.get("x-arr-clientcert", "")
    return (_base64_der(_limit("X-ARR-ClientCert", value), "X-ARR-ClientCert"),) if value \
        else ()


def _byte_sequence(item: str, what: str) -> bytes:
    item = item.strip()
    if len(item) < 2 or item[0] != ":" or item[-1] != ":":
        raise ForwardedCertError(f"{what} is not an RFC 8941 byte sequence (:base64:)")
    try:
        return base64.b64decode(item[1:-1], validate=True)
    except (binascii.Error, ValueError):
        raise ForwardedCertError(f"{what} is not base64") from None


def _rfc9440(headers: Mapping[str, str]) -> tuple[x509.Certificate, ...]:
    value = headers.get("client-cert", "")
    if not value:
        return ()
    leaf = _der(_byte_sequence(_limit("Client-Cert", value), "Client-Cert"), "Client-Cert")
    chain_value = _limit("Client-Cert-Chain", headers.get("client-cert-chain", ""))
    rest = tuple(_der(_byte_sequence(item, "Client-Cert-Chain"), "Client-Cert-Chain")
                 for item in chain_value.split(",") if item.strip())
    return _bounded((leaf, *rest), "Client-Cert-Chain")


FORMATS: dict[str, ForwardedFormat] = {
    "xfcc": ForwardedFormat("xfcc", ("x-forwarded-client-cert",), _xfcc,
                            frozenset({"x-forwarded-client-cert"})),
    "aws-alb": ForwardedFormat("aws-alb", (
        "x-amzn-mtls-clientcert", "x-amzn-mtls-clientcert-leaf",
        "x-amzn-mtls-clientcert-serial-number", "x-amzn-mtls-clientcert-issuer",
        "x-amzn-mtls-clientcert-subject", "x-amzn-mtls-clientcert-validity"), _aws_alb),
    "traefik": ForwardedFormat("traefik", ("x-forwarded-tls-client-cert",
                                           "x-forwarded-tls-client-cert-info"), _traefik),
    "azure": ForwardedFormat("azure", ("x-arr-clientcert",), _azure),
    "rfc9440": ForwardedFormat("rfc9440", ("client-cert", "client-cert-chain"), _rfc9440,
                               frozenset({"client-cert-chain"})),
}
# Headers any format may carry: stripped from every request that no trusted proxy sent.
KNOWN_CERT_HEADERS = frozenset(
    {header for fmt in FORMATS.values() for header in fmt.headers}
    | {"x-ssl-cert", "x-ssl-client-cert", "x-client-cert", "ssl-client-cert"})


def forwarded_format(setting: str) -> ForwardedFormat:
    """The parser a ``client_auth.forwarded_cert`` setting names."""
    if setting.startswith("pem-header:") and len(setting) > len("pem-header:"):
        return pem_header(setting[len("pem-header:"):])
    if setting in FORMATS:
        return FORMATS[setting]
    raise ValueError('"", "xfcc", "aws-alb", "pem-header:<Name>", "traefik", "azure" or '
                     '"rfc9440"')
