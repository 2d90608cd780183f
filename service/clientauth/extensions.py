"""Reading a certificate's extensions: one helper for an optional one, one for the unreadable.

cryptography parses every extension when any is asked for, and raises ``ValueError`` for a
malformed or repeated one. An extension that cannot be read must never pass for an absent
one in a decision, so :func:`extensions_problem` reports it and the policy refuses the
certificate; the other rules may then read it as absent without deciding anything on that.
"""

from __future__ import annotations

from typing import TypeVar

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID

E = TypeVar("E", bound=x509.ExtensionType)

# Critical extensions omgate (and OpenSSL) process, or may safely accept as understood.
# Anything else marked critical refuses the certificate (RFC 5280, section 4.2).
UNDERSTOOD_CRITICAL = frozenset({
    ExtensionOID.BASIC_CONSTRAINTS,
    ExtensionOID.KEY_USAGE,
    ExtensionOID.EXTENDED_KEY_USAGE,
    ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
    ExtensionOID.NAME_CONSTRAINTS,
    ExtensionOID.CERTIFICATE_POLICIES,
    ExtensionOID.POLICY_CONSTRAINTS,
    ExtensionOID.POLICY_MAPPINGS,
    ExtensionOID.INHIBIT_ANY_POLICY,
})


# What OpenSSL's SSL client purpose accepts in an extended key usage: clientAuth, and
# nothing else (anyExtendedKeyUsage alone does not do, for a CA or for the client).
CLIENT_USAGES = frozenset({ExtendedKeyUsageOID.CLIENT_AUTH})

# What cryptography raises for a certificate part it cannot read: a malformed value
# (ValueError), an extension repeated (DuplicateExtension), an iPAddress name constraint
# without its mask (TypeError), a name of a type it does not support.
READ_ERRORS: tuple[type[Exception], ...] = (
    ValueError, TypeError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType)


def optional_extension(certificate: x509.Certificate, kind: type[E]) -> E | None:
    """The extension's value, or None when it is absent (or unreadable: see above)."""
    try:
        return certificate.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None
    except READ_ERRORS:
        return None


def extensions_problem(certificate: x509.Certificate) -> str | None:
    """Why the certificate's extensions cannot be read, or None when they can."""
    try:
        certificate.extensions  # noqa: B018 - parsing is the check
    except READ_ERRORS as error:
        return str(error) or type(error).__name__
    return None


def certificate_problem(certificate: x509.Certificate) -> str | None:
    """Why a parsed certificate cannot be judged in full (its names or extensions do not
    read: cryptography parses them only when first asked), or None when it can."""
    try:
        certificate.subject  # noqa: B018 - parsing is the check
        certificate.issuer  # noqa: B018
    except READ_ERRORS as error:
        return f"its names cannot be read: {error}"
    problem = extensions_problem(certificate)
    return None if problem is None else f"its extensions cannot be read: {problem}"


def unknown_critical(certificate: x509.Certificate) -> list[x509.ObjectIdentifier]:
    try:
        extensions = certificate.extensions
    except READ_ERRORS:
        return []
    return [extension.oid for extension in extensions
            if extension.critical and extension.oid not in UNDERSTOOD_CRITICAL]


def ca_problem(certificate: x509.Certificate, *, as_anchor: bool) -> str | None:
    """Why ``certificate`` may not sign certificates (RFC 5280, 4.2.1.3 and 4.2.1.9), or None.

    A version 1 certificate has no extensions to say so; it is accepted as a CA only as
    a trust anchor, as OpenSSL does.
    """
    usage = optional_extension(certificate, x509.KeyUsage)
    if usage is not None and not usage.key_cert_sign:
        return "its key usage does not include certificate signing (keyCertSign)"
    constraints = optional_extension(certificate, x509.BasicConstraints)
    if constraints is None:
        if as_anchor and certificate.version == x509.Version.v1:
            return None
        return "it has no basic constraints extension, so it is not a CA certificate"
    if not constraints.ca:
        return "its basic constraints say it is not a CA (cA=FALSE)"
    return None


def extended_key_usages(certificate: x509.Certificate) -> list[x509.ObjectIdentifier] | None:
    """The extended key usages, or None when the certificate has no such extension."""
    usages = optional_extension(certificate, x509.ExtendedKeyUsage)
    return None if usages is None else list(usages)


def oid_name(oid: x509.ObjectIdentifier) -> str:
    """cryptography's short name of an OID ("clientAuth", "sha256WithRSAEncryption"), or
    its dotted form when it has none."""
    if oid == ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE:  # cryptography names it not
        return "anyExtendedKeyUsage"
    name = oid._name
    return name if name != "Unknown OID" else oid.dotted_string


def usages_named(usages: list[x509.ObjectIdentifier]) -> str:
    """An extended key usage list without clientAuth, as a finding names it."""
    listed = ", ".join(oid_name(usage) for usage in usages)
    if ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in usages:
        return (f"{listed}, and anyExtendedKeyUsage does not stand for clientAuth: OpenSSL, "
                "and so nginx, Apache and omgate's own listener, want clientAuth itself")
    return listed


def key_identifier_problem(certificate: x509.Certificate,
                           issuer: x509.Certificate) -> str | None:
    """Why ``certificate``'s Authority Key Identifier rules ``issuer`` out as its issuer, as
    OpenSSL's issuer check does (X509_check_akid), or None: the key identifier differs from
    the issuer's Subject Key Identifier, or the issuer's name and serial it may also give
    are another certificate's."""
    authority = optional_extension(certificate, x509.AuthorityKeyIdentifier)
    if authority is None:
        return None
    subject_key = optional_extension(issuer, x509.SubjectKeyIdentifier)
    if (authority.key_identifier is not None and subject_key is not None
            and authority.key_identifier != subject_key.digest):
        return (f"its Authority Key Identifier {authority.key_identifier.hex(':')} is not "
                f"the Subject Key Identifier {subject_key.digest.hex(':')} of its issuer")
    if (authority.authority_cert_serial_number is not None
            and authority.authority_cert_serial_number != issuer.serial_number):
        return (f"its Authority Key Identifier names the issuer certificate with serial "
                f"{authority.authority_cert_serial_number:x}, not {issuer.serial_number:x}")
    named = [name.value for name in authority.authority_cert_issuer or ()
             if isinstance(name, x509.DirectoryName)]
    if named and named[0] != issuer.issuer:
        return "its Authority Key Identifier names the issuer certificate of another CA"
    return None
