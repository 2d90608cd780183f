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

from service.clientauth.dn import Rdn, from_name, shown_name
from service.clientauth.extensions import optional_extension

# A CN shaped like a host name (a wildcard label allowed): one that can serve as a name.
_HOST_NAME = re.compile(r"^(?=.{1,253}$)(\*\.)?([A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?\.)+"
                        r"[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?\.?$")


@dataclass(frozen=True)
class Violation:
    name: str  # the certificate's name, as the finding shows it
    reason: str  # "is outside every permitted ..." or "is inside the excluded ..."


def _label_suffixes(name: str) -> list[str]:
    """``name`` and each part of it after a dot, dot included: ``a.b.c`` gives ``a.b.c``,
    ``.b.c``, ``.c``: what a subtree can match, looked up instead of compared one by one."""
    return [name] + [name[position:] for position, character in enumerate(name)
                     if character == "."]


def _host(value: str) -> str:
    return value.lower().rstrip(".")


@dataclass(frozen=True)
class _HostBases:
    """Host-name subtrees (dNSName, the domain of rfc822Name, the host of a URI) as sets:
    ``exact`` bases match the name itself (and, where ``with_subdomains``, names below
    it); ``dotted`` bases (a leading dot) match names strictly below them."""

    exact: frozenset[str]
    dotted: frozenset[str]
    with_subdomains: bool

    def contain(self, host: str) -> bool:
        suffixes = _label_suffixes(host)
        if host in self.exact or any(suffix in self.dotted for suffix in suffixes[1:]):
            return True
        return self.with_subdomains and any(suffix[1:] in self.exact
                                            for suffix in suffixes[1:])


def _host_bases(values: list[str], *, with_subdomains: bool, strip: bool) -> _HostBases:
    dotted = {(_host(value) if strip else value.lower()) for value in values
              if value.startswith(".")}
    exact = {(_host(value) if strip else value.lower()) for value in values
             if not value.startswith(".")}
    return _HostBases(frozenset(exact), frozenset(dotted), with_subdomains)


@dataclass(frozen=True)
class Subtrees:
    """One side of a nameConstraints extension (permitted or excluded), indexed by kind so
    that a name is looked up, not compared with every subtree: a CA with thousands of
    subtrees and a leaf with thousands of names cost thousands of lookups, not millions of
    comparisons. ``undecidable`` holds the kinds with a subtree omgate cannot evaluate
    (another name type, an iPAddress that is not a network): a name of such a kind is
    never allowed by them, and always caught by them when excluded."""

    shown: dict[type, tuple[str, ...]]
    dns: _HostBases
    dns_all: bool
    mailboxes: frozenset[tuple[str, str]]
    email_hosts: _HostBases
    uri_hosts: _HostBases
    networks: dict[tuple[int, int], frozenset[int]]  # (IP version, prefix) -> network ints
    directories: dict[int, frozenset[tuple[Rdn, ...]]]  # RDN count -> base DNs
    undecidable: frozenset[type]

    def has_kind(self, name: x509.GeneralName) -> bool:
        return type(name) in self.shown

    def contain(self, name: x509.GeneralName) -> bool | None:
        """Whether a subtree of the name's kind contains it; None: cannot be decided."""
        found = self._contain(name)
        if found is False and type(name) in self.undecidable:
            return None
        return found

    def _contain(self, name: x509.GeneralName) -> bool | None:
        match name:
            case x509.DNSName():
                return self.dns_all or self.dns.contain(_host(name.value))
            case x509.RFC822Name():
                local, at, domain = name.value.rpartition("@")
                return bool(at) and ((local, domain.lower()) in self.mailboxes
                                     or self.email_hosts.contain(domain.lower()))
            case x509.UniformResourceIdentifier():
                host = urlsplit(name.value).hostname
                return host is not None and self.uri_hosts.contain(host.lower())
            case x509.IPAddress():
                return self._contains_address(name.value)
            case x509.DirectoryName():
                have = from_name(name.value).rdns
                return any(have[:length] in bases
                           for length, bases in self.directories.items())
        return False

    def _contains_address(self, address: object) -> bool | None:
        if not isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address):
            return None
        value, bits = int(address), address.max_prefixlen
        return any(value >> (bits - prefix) << (bits - prefix) in networks
                   for (version, prefix), networks in self.networks.items()
                   if version == address.version)


def index_subtrees(subtrees: list[x509.GeneralName]) -> Subtrees:
    shown: dict[type, list[str]] = {}
    undecidable: set[type] = set()
    dns: list[str] = []
    email: list[str] = []
    uris: list[str] = []
    mailboxes: set[tuple[str, str]] = set()
    networks: dict[tuple[int, int], set[int]] = {}
    directories: dict[int, set[tuple[Rdn, ...]]] = {}
    for subtree in subtrees:
        shown.setdefault(type(subtree), []).append(_shown(subtree))
        match subtree:
            case x509.DNSName():
                dns.append(subtree.value)
            case x509.RFC822Name() if "@" in subtree.value:
                local, _, domain = subtree.value.rpartition("@")
                mailboxes.add((local, domain.lower()))
            case x509.RFC822Name():
                email.append(subtree.value)
            case x509.UniformResourceIdentifier():
                uris.append(subtree.value)
            case x509.IPAddress() if isinstance(subtree.value, ipaddress.IPv4Network
                                                | ipaddress.IPv6Network):
                network = subtree.value
                networks.setdefault((network.version, network.prefixlen), set()).add(
                    int(network.network_address))
            case x509.DirectoryName():
                rdns = from_name(subtree.value).rdns
                directories.setdefault(len(rdns), set()).add(rdns)
            case _:
                undecidable.add(type(subtree))
    return Subtrees(
        shown={kind: tuple(values) for kind, values in shown.items()},
        dns=_host_bases([value for value in dns if _host(value)], with_subdomains=True,
                        strip=True),
        dns_all=any(not _host(value) for value in dns),
        mailboxes=frozenset(mailboxes),
        email_hosts=_host_bases(email, with_subdomains=False, strip=False),
        uri_hosts=_host_bases(uris, with_subdomains=False, strip=True),
        networks={key: frozenset(values) for key, values in networks.items()},
        directories={key: frozenset(values) for key, values in directories.items()},
        undecidable=frozenset(undecidable),
    )


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
            return f"DirName:{shown_name(name.value)}"
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


def name_checks(certificate: x509.Certificate, constraints: x509.NameConstraints) -> int:
    """What checking ``certificate`` against ``constraints`` costs a verifier that compares
    every name with every subtree, counted as OpenSSL counts it before it refuses (subject
    attributes plus subjectAltName entries, times permitted plus excluded subtrees)."""
    alternative = optional_extension(certificate, x509.SubjectAlternativeName)
    names = len(list(certificate.subject)) + (len(alternative) if alternative else 0)
    return names * (len(constraints.permitted_subtrees or ())
                    + len(constraints.excluded_subtrees or ()))


# A violation names the subtrees it is outside of; an honest CA has a few, a hostile one
# thousands, and the finding is a log line.
SHOWN_SUBTREES = 5


def _listed(shown: tuple[str, ...]) -> str:
    more = len(shown) - SHOWN_SUBTREES
    return ", ".join(shown[:SHOWN_SUBTREES]) + (f" and {more} more" if more > 0 else "")


def violations(certificate: x509.Certificate, permitted: Subtrees, excluded: Subtrees, *,
               is_leaf: bool) -> list[Violation]:
    """The names of ``certificate`` that the constraints (indexed by
    :func:`index_subtrees`) do not allow."""
    found: list[Violation] = []
    for name in names_of(certificate, is_leaf=is_leaf):
        if excluded.has_kind(name) and excluded.contain(name) is not False:
            found.append(Violation(_shown(name), "is inside an excluded subtree ("
                                   + _listed(excluded.shown[type(name)]) + ")"))
        if permitted.has_kind(name) and permitted.contain(name) is not True:
            found.append(Violation(_shown(name), "is outside every permitted subtree ("
                                   + _listed(permitted.shown[type(name)]) + ")"))
    return found
