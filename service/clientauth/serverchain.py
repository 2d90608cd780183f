"""The server's own chain, judged the way Salesforce (a Java client) will see it.

The same path building and rules as for client chains, plus what only a server chain
needs: its key must match, every public name must be covered, and the chain must reach
a root in a public trust store, because Salesforce neither fetches missing
intermediates nor trusts private CAs.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from service.clientauth import rules
from service.clientauth.chain import ChainAnalysis, Link, analyse_chain
from service.clientauth.dn import shown_name
from service.clientauth.extensions import extended_key_usages, oid_name, optional_extension
from service.clientauth.keys import weak_key
from service.clientauth.model import Finding
from service.clientauth.names import common_names, dns_names, name_matches
from service.clientauth.wording import SERVER, capitalized, describe, sentence_start


@dataclass(frozen=True)
class ServerTrust:
    """The roots a server chain is judged against, and how findings name them."""

    anchors: tuple[x509.Certificate, ...]
    name: str  # "the public trust store", or the option and file given instead
    public: bool


def _ca_issuers_urls(certificate: x509.Certificate) -> tuple[str, ...]:
    """Where the AIA extension says the issuer's certificate can be downloaded (clients like
    Java, and Salesforce, do not follow it)."""
    try:
        access = certificate.extensions.get_extension_for_class(
            x509.AuthorityInformationAccess).value
    except (x509.ExtensionNotFound, ValueError):
        return ()
    return tuple(str(item.access_location.value) for item in access
                 if item.access_method == AuthorityInformationAccessOID.CA_ISSUERS
                 and isinstance(item.access_location, x509.UniformResourceIdentifier))


def _root_advice(trust: ServerTrust) -> str:
    """What to do about a root the chain ends at (or may end at), as a clause."""
    if trust.public:
        return "get the server certificate from a public CA: Salesforce trusts only public roots."
    return f"it is not in {trust.name}; Salesforce trusts only public roots."


def _missing_intermediate(last: Link, trust: ServerTrust) -> Finding:
    issuer = shown_name(last.certificate.issuer)
    urls = _ca_issuers_urls(last.certificate)
    published = f" (its certificate names where to get it: {', '.join(urls)})" if urls else ""
    return Finding(
        "missing_intermediate", "error", last.index,
        f"The server sends only its certificate, {describe(last)}, issued by {issuer}"
        f"{published}, which is neither sent nor a root in {trust.name}: either the "
        "intermediate that issued it is missing, and Salesforce does not fetch it, or "
        f"{issuer} is a root that is not trusted.",
        f"Append the intermediate {issuer} to server.certfile after the server certificate "
        "(nginx: in the ssl_certificate file; Apache: SSLCertificateChainFile)"
        + (f", from {urls[0]} or your CA. " if urls else ", from your CA. ")
        + f"If {issuer} is a root, {_root_advice(trust)}",
    )


def _reach_public_root(analysis: ChainAnalysis, trust: ServerTrust) -> list[Finding]:
    last = analysis.path[-1]
    if analysis.end == "anchor":
        return []
    if analysis.end == "self_signed" and len(analysis.path) == 1:
        return [Finding(
            "self_signed", "error", last.index,
            f"{sentence_start(last)} is self-signed; Salesforce, like every client, "
            "refuses a self-signed server certificate.",
            "Get the server certificate from a public CA that Salesforce trusts.",
        )]
    if analysis.end == "self_signed":
        return [Finding(
            "not_publicly_trusted", "error", last.index,
            f"The chain ends at {describe(last)}, a root that is not in {trust.name}.",
            capitalized(_root_advice(trust)),
        )]
    if analysis.end == "bad_signature":
        return [rules.bad_signature(analysis, SERVER)]
    if len(analysis.path) == 1:
        return [_missing_intermediate(last, trust)]
    issuer = shown_name(last.certificate.issuer)
    return [Finding(
        "not_publicly_trusted", "error", last.index,
        f"{sentence_start(last)} was issued by {issuer}, which is neither sent nor a "
        f"root in {trust.name}.",
        f"If {issuer} is an intermediate, append it to the chain; if it is a root, "
        + _root_advice(trust),
    )]


def covers(certificate: x509.Certificate, name: str) -> bool:
    """Whether a server certificate is valid for ``name``: an IP address in its IP SANs, a
    host name in its DNS SANs (its CN only without them; a wildcard covers one label)."""
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        address = None
    if address is not None:
        try:
            sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        except (x509.ExtensionNotFound, ValueError):
            return False
        return address in sans.value.get_values_for_type(x509.IPAddress)
    names = dns_names(certificate) or common_names(certificate)  # CN only without SANs
    return any(name_matches(name, pattern) for pattern in names)


def _hostnames(leaf: Link, public_names: tuple[str, ...]) -> list[Finding]:
    shown = ", ".join(dns_names(leaf.certificate) or common_names(leaf.certificate)) or "none"
    return [Finding(
        "hostname_mismatch", "error", leaf.index,
        f"{sentence_start(leaf)} does not cover {name!r}; it names {shown} (a wildcard "
        "covers exactly one label).",
        f"Get a certificate whose subject alternative names include {name}, or correct "
        "server.public_names.",
    ) for name in public_names if not covers(leaf.certificate, name)]


def _weak_keys(analysis: ChainAnalysis) -> list[Finding]:
    findings = []
    for link in analysis.path[:-1] if analysis.anchored else analysis.path:
        problem = weak_key(link.certificate)
        if problem:
            findings.append(Finding(
                "weak_signature_algorithm", "error", link.index,
                f"{sentence_start(link)} has {problem}, too weak to sign with.",
                "Issue the certificate for a 2048-bit (or larger) RSA key or a P-256 key.",
            ))
    return findings


# What Java's checks of a TLS server certificate (and so Salesforce's) accept in an extended
# key usage: serverAuth, or anyExtendedKeyUsage.
SERVER_USAGES = frozenset({ExtendedKeyUsageOID.SERVER_AUTH,
                           ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE})


def _server_usage(leaf: Link) -> list[Finding]:
    """A server certificate must be marked for TLS servers when it lists usages at all, and
    its key usage, when present, must allow the signature that ECDHE suites and TLS 1.3
    make the server's key give."""
    findings = []
    usages = extended_key_usages(leaf.certificate)
    if usages is not None and not SERVER_USAGES & set(usages):
        listed = ", ".join(oid_name(usage) for usage in usages) or "nothing"
        findings.append(Finding(
            "missing_server_auth_eku", "error", leaf.index,
            f"{sentence_start(leaf)} is not marked for TLS server authentication: its "
            f"extended key usage lists only {listed}. Salesforce, like every TLS client, "
            "refuses it as a server's certificate.",
            "Get a server certificate with the serverAuth extended key usage (a certificate "
            "issued for a TLS client cannot serve) and put it first in server.certfile.",
        ))
    usage = optional_extension(leaf.certificate, x509.KeyUsage)
    if usage is not None and not usage.digital_signature:
        findings.append(Finding(
            "missing_server_auth_eku", "error", leaf.index,
            f"{sentence_start(leaf)} may not sign: its key usage leaves out digitalSignature, "
            "and a server proves its key by signing the handshake (ECDHE suites, TLS 1.3). "
            "Salesforce refuses the handshake.",
            "Get a server certificate whose key usage includes digitalSignature.",
        ))
    return findings


def _key_match(leaf: Link, key: PublicKeyTypes | None) -> list[Finding]:
    if key is None or leaf.certificate.public_key() == key:
        return []
    return [Finding(
        "key_mismatch", "error", leaf.index,
        f"The private key in server.keyfile does not belong to {describe(leaf)}.",
        "Pair the certificate with the key it was issued for (the first certificate in "
        "server.certfile must be the one for server.keyfile).",
    )]


def analyse_server_chain(chain: tuple[x509.Certificate, ...], *, trust: ServerTrust,
                         public_names: tuple[str, ...], now: dt.datetime,
                         key: PublicKeyTypes | None = None,
                         expiry_warning_days: int = 30) -> list[Finding]:
    """Every finding about a server chain as sent (leaf first)."""
    analysis = analyse_chain(chain, trust.anchors)
    leaf = analysis.path[0]
    return [
        *rules.structure(analysis, chain, SERVER),
        *_reach_public_root(analysis, trust),
        *rules.validity(analysis, now, skew=dt.timedelta(0), warning_days=expiry_warning_days,
                        audience=SERVER),
        *rules.weak_signatures(analysis, reject=True, audience=SERVER),
        *_weak_keys(analysis),
        *_hostnames(leaf, public_names),
        *_server_usage(leaf),
        *_key_match(leaf, key),
    ]
