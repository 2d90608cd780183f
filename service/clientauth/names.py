"""Host-name matching with one-label wildcards, and the names a certificate carries."""

from __future__ import annotations

from cryptography import x509
from cryptography.x509.oid import NameOID


def name_matches(name: str, pattern: str) -> bool:
    """``*.example.com`` covers ``a.example.com`` but not ``example.com`` or ``a.b.example.com``."""
    name, pattern = name.lower().rstrip("."), pattern.lower().rstrip(".")
    if pattern.startswith("*."):
        head, _, rest = name.partition(".")
        return bool(head) and rest == pattern[2:]
    return name == pattern


def dns_names(certificate: x509.Certificate) -> list[str]:
    try:
        extension = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except (x509.ExtensionNotFound, ValueError):
        return []
    return list(extension.value.get_values_for_type(x509.DNSName))


def common_names(certificate: x509.Certificate) -> list[str]:
    return [str(attribute.value)
            for attribute in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]


def identity_names(certificate: x509.Certificate) -> list[str]:
    """The DNS SANs, or the CN when there are none (how clients are named)."""
    return dns_names(certificate) or common_names(certificate)


def has_subject_alternative_name(certificate: x509.Certificate) -> bool:
    try:
        certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except (x509.ExtensionNotFound, ValueError):
        return False
    return True
