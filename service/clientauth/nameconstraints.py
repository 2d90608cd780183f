"""Name constraints (RFC 5280, 4.2.1.10): which names a CA's subtree allows below it.

Written here rather than taken from cryptography because its verifier says only *that* a
path fails, and omgate's finding must name the certificate, the name and the constraint.
The verifier still runs on every anchored path; this module is what explains it.

Names checked, for every certificate below the constraining CA (self-issued intermediates
excepted, as RFC 5280 says): the subject DN against directoryName subtrees, the subject's
emailAddress attributes against rfc822Name subtrees, every subjectAltName entry against
the subtrees of its type, and, for the client certificate when it has no DNS name in its
subjectAltName, a host-name-shaped CN against dNSName subtrees (what OpenSSL does, and what
a CN used as a name by ``client_auth.allowed_names`` requires). A name of a type the CA
constrains in a way omgate cannot evaluate is a violation, never a pass.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.x509.oid import NameOID

from service.clientauth.dn import from_name
from service.clientauth.extensions import optional_extension

# A CN shaped like a host name (a wildcard label allowed): one that can serve as a name.
_HOST_NAME = re.compile(r"^(?=.{1,253}$)(\*\.)?([A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?\.)+"
                        r"[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?\.?$")


@dataclass(frozen=True)
class Violation:
    name: str  # the certificate's name, as the finding shows it
    reason: str  # "is outside every permitted ..." or "is inside the excluded ..."


def _dns_within(name: str, base: str) -> bool:
    name, base = name.lower().rstrip("."), base.lower().rstrip(".")
    if not base:
        return True
    if base.startswith("."):
        return name.endswith(base)
    return name == base or name.endswith("." + base)


def _email_within(address: str, base: str) -> bool:
    local, at, domain = address.rpartition("@")
    if not at:
        return False
    if "@" in base:
        base_local, _, base_domain = base.rpartition("@")
        return local == base_local and domain.lower() == base_domain.lower()
    if base.startswith("."):
        return domain.lower().endswith(base.lower())
    return domain.lower() == base.lower()


def _uri_within(uri: str, base: str) -> bool:
    host = urlsplit(uri).hostname
    if not host:
        return False  # a URI without a host cannot be shown to be inside any subtree
    if base.startswith("."):
        return host.lower().endswith(base.lower())
    return host.lower() == base.lower().rstrip(".")


def _directory_within(name: x509.Name, base: x509.Name) -> bool:
    have, want = from_name(name).rdns, from_name(base).rdns
    return have[:len(want)] == want


def _ip_within(address: ipaddress.IPv4Address | ipaddress.IPv6Address,
               network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    return address.version == network.version and address in network


def _within(name: x509.GeneralName, subtree: x509.GeneralName) -> bool | None:
    """Whether ``name`` lies in ``subtree`` (of the same type); None: cannot be decided."""
    match name, subtree:
        case x509.DNSName(), x509.DNSName():
            return _dns_within(name.value, subtree.value)
        case x509.RFC822Name(), x509.RFC822Name():
            return _email_within(name.value, subtree.value)
        case x509.UniformResourceIdentifier(), x509.UniformResourceIdentifier():
            return _uri_within(name.value, subtree.value)
        case x509.IPAddress(), x509.IPAddress():
            if isinstance(name.value, ipaddress.IPv4Address | ipaddress.IPv6Address) and \
                    isinstance(subtree.value, ipaddress.IPv4Network | ipaddress.IPv6Network):
                return _ip_within(name.value, subtree.value)
            return None
        case x509.DirectoryName(), x509.DirectoryName():
            return _directory_within(name.value, subtree.value)
    return None


def _shown(name: x509.GeneralName) -> str:
    match name:
        case x509.DNSName():
            return f"DNS:{name.value}"
        case x509.RFC822Name():
            return f"email:{name.value}"
        case x509.UniformResourceIdentifier():
            return f"URI:{name.value}"
        case x509.IPAddress():
            return f"IP:{name.value}"
        case x509.DirectoryName():
            return f"DirName:{name.value.rfc4514_string()}"
    return f"{type(name).__name__}:{getattr(name, 'value', '')!r}"


def names_of(certificate: x509.Certificate, *, is_leaf: bool) -> list[x509.GeneralName]:
    """Every name of ``certificate`` that name constraints apply to."""
    names: list[x509.GeneralName] = []
    if certificate.subject.rdns:
        names.append(x509.DirectoryName(certificate.subject))
    names += [x509.RFC822Name(str(attribute.value)) for attribute in
              certificate.subject.get_attributes_for_oid(NameOID.EMAIL_ADDRESS)]
    alternative = optional_extension(certificate, x509.SubjectAlternativeName)
    sans = list(alternative) if alternative is not None else []
    names += sans
    if is_leaf and not any(isinstance(name, x509.DNSName) for name in sans):
        names += [x509.DNSName(value) for value in _host_name_common_names(certificate)]
    return names


def _host_name_common_names(certificate: x509.Certificate) -> Iterable[str]:
    for attribute in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME):
        value = str(attribute.value)
        if _HOST_NAME.match(value):
            yield value


def _same_kind(name: x509.GeneralName, subtrees: Iterable[x509.GeneralName]
               ) -> list[x509.GeneralName]:
    return [subtree for subtree in subtrees if type(subtree) is type(name)]


def violations(certificate: x509.Certificate, constraints: x509.NameConstraints, *,
               is_leaf: bool) -> list[Violation]:
    """The names of ``certificate`` that ``constraints`` do not allow."""
    permitted = list(constraints.permitted_subtrees or ())
    excluded = list(constraints.excluded_subtrees or ())
    found: list[Violation] = []
    for name in names_of(certificate, is_leaf=is_leaf):
        for subtree in _same_kind(name, excluded):
            if _within(name, subtree) is not False:
                found.append(Violation(_shown(name), f"is inside the excluded subtree "
                                                     f"{_shown(subtree)}"))
                break
        allowed = _same_kind(name, permitted)
        if allowed and not any(_within(name, subtree) for subtree in allowed):
            shown = ", ".join(_shown(subtree) for subtree in allowed)
            found.append(Violation(_shown(name), f"is outside every permitted subtree "
                                                 f"({shown})"))
    return found
