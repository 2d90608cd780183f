"""Host-name matching with one-label wildcards, and the names a certificate carries."""

from __future__ import annotations

from cryptography import x509
from cryptography.x509.oid import NameOID

from service.clientauth.extensions import optional_extension


def name_matches(name: str, pattern: str) -> bool:
    """``*.example.com`` covers ``a.example.com`` but not ``example.com`` or ``a.b.example.com``."""
    name, pattern = name.lower().rstrip("."), pattern.lower().rstrip(".")
    if pattern.startswith("*."):
        head, _, rest = name.partition(".")
        return bool(head) and rest == pattern[2:]
    return name == pattern


def dns_names(certificate: x509.Certificate) -> list[str]:
    alternative = optional_extension(certificate, x509.SubjectAlternativeName)
    return [] if alternative is None else list(alternative.get_values_for_type(x509.DNSName))


def common_names(certificate: x509.Certificate) -> list[str]:
    return [str(attribute.value)
            for attribute in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]


def identity_names(certificate: x509.Certificate) -> list[str]:
    """The DNS SANs; the CN only when there is no subjectAltName extension at all (RFC 6125:
    a SAN holding only an email address or a URI still rules the CN out)."""
    if has_subject_alternative_name(certificate):
        return dns_names(certificate)
    return common_names(certificate)


def has_subject_alternative_name(certificate: x509.Certificate) -> bool:
    return optional_extension(certificate, x509.SubjectAlternativeName) is not None
