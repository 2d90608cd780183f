"""X-Forwarded-Client-Cert written the way Envoy writes it, and certificates that abuse it."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from urllib.parse import quote

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from service.tools.pki import issue, name

ENVOY_DETAILS = ("cert", "chain", "subject", "uri", "dns")  # set_current_client_cert_details


def pem(*certificates: x509.Certificate) -> str:
    return "".join(c.public_bytes(Encoding.PEM).decode() for c in certificates)


def url_pem(*certificates: x509.Certificate) -> str:
    return quote(pem(*certificates), safe="")


def _sans(certificate: x509.Certificate, kind: type[x509.GeneralName]) -> list[str]:
    try:
        extension = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return [str(value) for value in extension.value.get_values_for_type(kind)]  # type: ignore[arg-type]


def envoy_xfcc(chain: tuple[x509.Certificate, ...], details: Iterable[str] = ENVOY_DETAILS,
               ) -> str:
    """The element Envoy's SANITIZE_SET writes for a client presenting ``chain``.

    Envoy's order (Hash, Cert, Chain, Subject, URI, DNS); Cert, Chain and Subject are
    quoted, the URI and DNS names are not (``URI=`` is written even when there is none).
    """
    leaf = chain[0]
    wanted = set(details)
    pairs = [f"Hash={hashlib.sha256(leaf.public_bytes(Encoding.DER)).hexdigest()}"]
    if "cert" in wanted:
        pairs.append(f'Cert="{url_pem(leaf)}"')
    if "chain" in wanted:
        pairs.append(f'Chain="{url_pem(*chain)}"')
    if "subject" in wanted:
        pairs.append(f'Subject="{leaf.subject.rfc4514_string()}"')
    if "uri" in wanted:
        pairs += [f"URI={uri}" for uri in _sans(leaf, x509.UniformResourceIdentifier)] or ["URI="]
    if "dns" in wanted:
        pairs += [f"DNS={dns}" for dns in _sans(leaf, x509.DNSName)]
    return ";".join(pairs)


def self_signed_with_dns_name(dns_name: str) -> x509.Certificate:
    """What anyone can present to an Envoy that accepts untrusted client certificates."""
    return issue(name("attacker.example", "Mallory"), dns_names=(dns_name,)).certificate
