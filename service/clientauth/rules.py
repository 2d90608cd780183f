"""Each policy rule: a pure function from what is known to a list of findings.

Every message names the certificate it is about (its position in the chain as
presented, and its subject) and every hint says what to change.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Literal, TypeGuard, get_args

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPublicKeyTypes,
    CertificatePublicKeyTypes,
)
from cryptography.x509.oid import ExtensionOID

from service.clientauth.algorithms import weak_signature
from service.clientauth.chain import MAX_SIGNATURE_CHECKS, ChainAnalysis, Link
from service.clientauth.dn import DistinguishedName, from_name, shown_name
from service.clientauth.extensions import (
    CLIENT_USAGES,
    READ_ERRORS,
    extended_key_usages,
    optional_extension,
    usages_named,
)
from service.clientauth.model import Finding, FindingCode, Policy, Severity
from service.clientauth.names import identity_names, name_matches
from service.clientauth.pathrules import too_costly
from service.clientauth.summary import fingerprint, spki_sha256
from service.clientauth.wording import (
    CLIENT,
    Audience,
    date,
    describe,
    sentence_start,
    subject_of,
)
from service.text import clipped

# -- the shape of what was sent ------------------------------------------------------------


def structure(analysis: ChainAnalysis, chain: tuple[x509.Certificate, ...],
              audience: Audience = CLIENT) -> list[Finding]:
    findings: list[Finding] = []
    leaf = analysis.path[0]
    if analysis.leaf_index != 0:
        findings.append(Finding(
            "chain_out_of_order", "error", 0,
            f"The chain starts with certificate 0 ({subject_of(chain[0])}), a CA certificate; "
            f"the {audience.party} certificate is {describe(leaf)}.",
            f"Send the {audience.party} certificate first, then its issuer, then that "
            "issuer's issuer.",
        ))
    elif analysis.out_of_order:
        order = ", ".join(str(link.index) for link in analysis.path if link.index is not None)
        findings.append(Finding(
            "chain_out_of_order", "warning", None,
            f"The issuers are not in order: the path uses the certificates in the order "
            f"{order}.",
            "Order the chain leaf first, then each issuer in turn; strict peers refuse "
            "any other order.",
        ))
    for index in analysis.duplicates:
        first = next(i for i, cert in enumerate(chain) if fingerprint(cert) ==
                     fingerprint(chain[index]))
        findings.append(Finding(
            "duplicate_certificate", "warning", index,
            f"Certificate {index} ({subject_of(chain[index])}) repeats certificate {first}.",
            "Send each certificate once.",
        ))
    for index in analysis.unrelated:
        findings.append(Finding(
            "unrelated_certificate", "warning", index,
            f"Certificate {index} ({subject_of(chain[index])}) is not part of the path from "
            f"the {audience.party} certificate to a trust anchor; it is ignored.",
            f"Remove it from {audience.chain_setting}.",
        ))
    for index in analysis.roots_included:
        findings.append(Finding(
            "root_included", "warning", index,
            f"Certificate {index} ({subject_of(chain[index])}) is the trust anchor itself; "
            "the other side already has it.",
            f"Leave the root out of {audience.chain_setting}; it only adds bytes.",
        ))
    return findings


# -- reaching a trust anchor --------------------------------------------------------------


# How an operator confirms a CA certificate before trusting it: never from the connection.
CONFIRM_CA = ("obtain that CA certificate from the sender's published chain (for Salesforce, "
              "its documentation of the API client certificate), not from this connection, "
              "and compare its SHA-256 fingerprint with the one the CA publishes")


def _issuer_not_found(analysis: ChainAnalysis) -> Finding:
    last = analysis.path[-1]
    issuer = shown_name(last.certificate.issuer)
    if len(analysis.path) == 1:
        return Finding(
            "missing_intermediate", "error", last.index,
            f"The client sent only its certificate, {describe(last)}, issued by {issuer}, "
            "which is neither sent nor in client_auth.trust: either the sender left out "
            "its intermediate, or its CA is not one you trust.",
            "Ask the sender to send its chain (its certificate, then the intermediate). If "
            f"{issuer} is a CA you mean to trust, {CONFIRM_CA}, then add it to "
            "client_auth.trust.",
        )
    return Finding(
        "untrusted_root", "error", last.index,
        f"{sentence_start(last)} was issued by {issuer}, which is "
        "neither in the chain nor in client_auth.trust.",
        f"If {issuer} is a CA you mean to trust, {CONFIRM_CA}, then add it to "
        "client_auth.trust; otherwise this client is not one of yours.",
    )


def reach_anchor(analysis: ChainAnalysis, policy: Policy) -> list[Finding]:
    last = analysis.path[-1]
    match analysis.end:
        case "anchor":
            if analysis.depth > policy.verify_depth:
                above = ", ".join(subject_of(link.certificate) for link in analysis.path[1:])
                return [Finding(
                    "depth_exceeded", "error", 0,
                    f"The path from {describe(analysis.path[0])} needs depth "
                    f"{analysis.depth} ({analysis.depth} CA certificates above it, the anchor "
                    f"included: {above}); client_auth.verify_depth allows "
                    f"{policy.verify_depth}.",
                    f"Set client_auth.verify_depth = {analysis.depth}, or trust the "
                    "intermediate directly (trust_intermediates = true).",
                )]
            return []
        case "self_signed" if len(analysis.path) == 1:
            return [Finding(
                "self_signed", "error", last.index,
                f"{sentence_start(last)} is self-signed and is not a "
                "trust anchor.",
                "Anyone can make a self-signed certificate with this name. If the sender "
                "really uses a self-signed certificate, obtain it from the sender out of band "
                "(in Salesforce: Setup, Certificate and Key Management), check that its "
                "SHA-256 fingerprint is the one in this line's chain, and list that file in "
                "client_auth.pin_files.",
            )]
        case "self_signed":
            return [Finding(
                "untrusted_root", "error", last.index,
                f"The path ends at {describe(last)}, a self-signed root that is not in "
                "client_auth.trust.",
                f"If {subject_of(last.certificate)} is a CA you mean to trust, {CONFIRM_CA}, "
                "then add it to client_auth.trust.",
            )]
        case "too_complex":
            return [too_costly(f"building its path took more than {MAX_SIGNATURE_CHECKS} "
                               "signature checks (it holds many certificates with the same "
                               "names)")]
        case "bad_signature":
            return [bad_signature(analysis, CLIENT)]
        case "issuer_not_found":
            return [_issuer_not_found(analysis)]
    return [Finding("untrusted_root", "error", None,
                    "The chain does not lead to a trust anchor within 16 certificates.",
                    "Send a shorter chain.")]


def bad_signature(analysis: ChainAnalysis, audience: Audience) -> Finding:
    last, claimed = analysis.path[-1], analysis.unverified_issuer
    named = subject_of(claimed) if claimed else shown_name(last.certificate.issuer)
    return Finding(
        "bad_signature", "error", last.index,
        f"{sentence_start(last)} names {named} as its "
        "issuer, but its signature does not verify with that certificate's key"
        + (f" (sha256 {fingerprint(claimed)})." if claimed else "."),
        f"The chain mixes certificates of different CA keys, or was altered: {audience.sender} "
        f"must use its current chain ({audience.chain_setting}), and "
        f"{audience.trust_setting} must hold the current CA certificate.",
    )


def unchecked_signatures(analysis: ChainAnalysis) -> list[Finding]:
    findings = []
    for position in analysis.unchecked_links:
        link = analysis.path[position]
        algorithm = (weak_signature(link.certificate)
                     or link.certificate.signature_algorithm_oid.dotted_string)
        findings.append(Finding(
            "bad_signature", "error", link.index,
            f"The {algorithm} signature on {describe(link)} cannot be checked: nothing "
            "vouches for it.",
            "Ask the CA for a certificate signed with SHA-256 or stronger.",
        ))
    return findings


# -- time ----------------------------------------------------------------------------------


def validity(analysis: ChainAnalysis, now: dt.datetime, *, skew: dt.timedelta,
             warning_days: int, audience: Audience = CLIENT) -> list[Finding]:
    findings = []
    for position, link in enumerate(analysis.path):
        certificate = link.certificate
        not_before, not_after = certificate.not_valid_before_utc, certificate.not_valid_after_utc
        renew = (audience.renew_leaf if position == 0
                 else audience.replace_ca(subject_of(certificate)))
        if now + skew < not_before:
            days = (not_before - now).days
            findings.append(Finding(
                "not_yet_valid", "error", link.index,
                f"{sentence_start(link)} is valid only from "
                f"{date(not_before)} (in {days} days).",
                "Check the clocks on both sides; a certificate this new is unusual.",
            ))
        elif now - skew > not_after:
            days = (now - not_after).days
            findings.append(Finding(
                "expired", "error", link.index,
                f"{sentence_start(link)} expired on "
                f"{date(not_after)}, {days} days ago.", renew,
            ))
        elif (not_after - now).days < warning_days:
            findings.append(Finding(
                "expires_soon", "warning", link.index,
                f"{sentence_start(link)} expires on "
                f"{date(not_after)}, in {(not_after - now).days} days.", renew,
            ))
    return findings


# -- algorithms and revocation ------------------------------------------------------------


def weak_signatures(analysis: ChainAnalysis, *, reject: bool,
                    audience: Audience = CLIENT) -> list[Finding]:
    severity: Severity = "error" if reject else "warning"
    signed = analysis.path[:-1] if analysis.anchored else analysis.path
    findings = []
    for link in signed:  # an anchor's own signature vouches for nothing
        digest = weak_signature(link.certificate)
        if digest is not None:
            findings.append(Finding(
                "weak_signature_algorithm", severity, link.index,
                f"{sentence_start(link)} is signed with "
                f"{digest}, which no longer protects a signature.",
                "Ask the CA for a certificate signed with SHA-256 or stronger"
                + (f"; {audience.weak_signature_relief}."
                   if reject and audience.weak_signature_relief else "."),
            ))
    return findings


_SIGNING_KEY_TYPES = get_args(CertificateIssuerPublicKeyTypes)


def _can_sign(key: CertificatePublicKeyTypes) -> TypeGuard[CertificateIssuerPublicKeyTypes]:
    """Whether a certificate's key is of a type that can sign (a CRL, a certificate)."""
    return isinstance(key, _SIGNING_KEY_TYPES)


# The CRL extensions RFC 5280 lets a CA mark critical (5.2.4, 5.2.5); any other marked
# critical (a critical CRL number included) makes the CRL unusable, as it does for OpenSSL.
_CRITICAL_CRL_EXTENSIONS = frozenset({ExtensionOID.ISSUING_DISTRIBUTION_POINT,
                                      ExtensionOID.DELTA_CRL_INDICATOR})


def _issued_crls(issuer: x509.Certificate,
                 crls: tuple[x509.CertificateRevocationList, ...]
                 ) -> list[x509.CertificateRevocationList]:
    """The configured CRLs that ``issuer`` signed."""
    named = [crl for crl in crls if crl.issuer == issuer.subject]
    if not named:
        return []
    try:
        key = issuer.public_key()
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return []
    if not _can_sign(key):  # an X25519, X448 or ML-KEM key signs nothing
        return []
    signed = []
    for crl in named:
        try:
            if crl.is_signature_valid(key):
                signed.append(crl)
        except (TypeError, ValueError):
            continue
    return signed


def crl_problem(crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> str | None:
    """Why a CRL its issuer signed still cannot be relied on (RFC 5280, 5.2 and 6.3.3)."""
    usage = optional_extension(issuer, x509.KeyUsage)
    if usage is not None and not usage.crl_sign:
        return "its issuer's key usage does not allow signing CRLs (cRLSign)"
    try:
        extensions = crl.extensions
    except READ_ERRORS as error:
        return f"its extensions cannot be read ({error})"
    critical = [e.oid.dotted_string for e in extensions
                if e.critical and e.oid not in _CRITICAL_CRL_EXTENSIONS]
    if critical:
        return ("it has critical extension(s) omgate does not process: "
                + ", ".join(critical))
    if not any(e.oid == ExtensionOID.CRL_NUMBER for e in extensions):
        return "it has no CRL number, which RFC 5280 (5.2.3) requires"
    return None


def revocation(analysis: ChainAnalysis, policy: Policy) -> list[Finding]:
    """Each certificate on the path against the CRLs of ``client_auth.crl_files`` its issuer
    signed; a CRL that cannot be relied on refuses the chain (omgate cannot tell whether
    the certificate is revoked), as OpenSSL's CRL checking does."""
    findings = []
    for position, link in enumerate(analysis.path[:-1]):
        issuer = analysis.path[position + 1].certificate
        for crl in _issued_crls(issuer, policy.crls):
            # a revocation the CA signed stands even in a CRL otherwise unusable
            revoked = crl.get_revoked_certificate_by_serial_number(
                link.certificate.serial_number)
            if revoked is not None:
                findings.append(Finding(
                    "revoked", "error", link.index,
                    f"{sentence_start(link)} (serial "
                    f"{link.certificate.serial_number:x}) was revoked on "
                    f"{date(revoked.revocation_date_utc)} by {subject_of(issuer)}.",
                    "The sender must use a new certificate.",
                ))
                continue
            problem = crl_problem(crl, issuer)
            if problem is not None:
                findings.append(Finding(
                    "path_validation_failed", "error", link.index,
                    f"The CRL of {subject_of(issuer)} in client_auth.crl_files cannot be "
                    f"used: {problem}; omgate cannot tell whether {describe(link)} is revoked.",
                    "Replace that file with the CA's current, well-formed CRL (or remove it "
                    "from client_auth.crl_files).",
                ))
    return findings


# A host name in the preferred name syntax (RFC 1034 3.5, as RFC 1123 2.1 relaxes it), with
# an optional wildcard first label: letters, digits and hyphens, no label starting or ending
# with a hyphen, and a last label that is not all digits (or it reads as an IP address).
_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
_HOST_NAME = re.compile(rf"^(\*\.)?({_LABEL}\.)*(?=[A-Za-z0-9-]*[A-Za-z-]){_LABEL}\.?$")


def alternative_name_syntax(leaf: Link) -> list[Finding]:
    """The client certificate's DNS names are host names (RFC 5280, 4.2.1.6): an IP address
    or an underscore in a dNSName could pass a name or an IP constraint it should not."""
    alternative = optional_extension(leaf.certificate, x509.SubjectAlternativeName)
    if alternative is None:
        return []
    malformed = [name for name in alternative.get_values_for_type(x509.DNSName)
                 if len(name) > 254 or not _HOST_NAME.match(name)]
    if not malformed:
        return []
    shown = ", ".join(repr(clipped(name)) for name in malformed[:3])
    return [Finding(
        "path_validation_failed", "error", leaf.index,
        f"{sentence_start(leaf)} has DNS names that are not host names in RFC 5280's "
        f"preferred syntax (4.2.1.6): {shown}.",
        "The sender's CA must issue the name as a host name (letters, digits, hyphens), and "
        "an IP address as an iPAddress name.",
    )]


# -- who the client is ---------------------------------------------------------------------


def pins(leaf: Link, policy: Policy, verified: bool) -> list[Finding]:
    """``verified``: the chain has no other error, so a new pin may be suggested as is."""
    if not policy.pins or any(pin.matches(leaf.certificate) for pin in policy.pins):
        return []
    sha256 = fingerprint(leaf.certificate)
    if verified and policy.trust_required:
        hint = (f'If the sender rotated its certificate (Salesforce does, yearly), add '
                f'"sha256:{sha256}" to client_auth.pins and keep the old pin until the '
                "rotation is over.")
    else:
        hint = ("Nothing else vouches for this certificate, so do not pin it from this line: "
                "if the sender rotated its certificate, obtain the new one from the sender "
                "out of band, check its SHA-256 fingerprint, and pin that.")
    return [Finding(
        "pin_mismatch", "error", leaf.index,
        f"{sentence_start(leaf)} matches none of the "
        f"{len(policy.pins)} configured pin(s); its fingerprint is sha256:{sha256} and its key "
        f"pin spki:{spki_sha256(leaf.certificate)}.",
        hint,
    )]


def _first_difference(expected: DistinguishedName, actual: x509.Name) -> str:
    actual_rdns = from_name(actual).rdns
    for position, (want, have) in enumerate(zip(expected.rdns, actual_rdns, strict=False)):
        if want != have:
            return f"attribute {position + 1} differs"
    return f"{len(expected.rdns)} attribute(s) expected, {len(actual_rdns)} found"


def distinguished_name(leaf: Link, expected: DistinguishedName | None,
                       which: Literal["issuer", "subject"],
                       verified: bool) -> list[Finding]:
    """``verified``: the chain has no other error, so its DN may be suggested as is."""
    if expected is None:
        return []
    name = leaf.certificate.issuer if which == "issuer" else leaf.certificate.subject
    if expected.matches(name):
        return []
    if expected.matches_reversed(name):
        hint = ("The same attributes match in the opposite order: RFC 4514 writes the most "
                "specific first (CN=...,O=...,C=...), OpenSSL's forms start with C.")
    elif verified:
        hint = (f"If this {which} is expected, set "
                f'client_auth.{which}_dn = "{name.rfc4514_string()}".')
    else:
        hint = (f"This chain has other errors, so its {which} proves nothing yet; correct "
                f"those first, then compare the {which} with the one you expect.")
    verb = "was issued by" if which == "issuer" else "has the subject"
    code: FindingCode = "issuer_dn_mismatch" if which == "issuer" else "subject_dn_mismatch"
    return [Finding(
        code, "error", leaf.index,
        f"{sentence_start(leaf)} {verb} {shown_name(name)}, not "
        f"the configured client_auth.{which}_dn {expected.text!r} "
        f"({_first_difference(expected, name)}).",
        hint,
    )]


def allowed_names(leaf: Link, policy: Policy) -> list[Finding]:
    if not policy.allowed_names:
        return []
    names = identity_names(leaf.certificate)
    if any(name_matches(name, pattern) for name in names for pattern in policy.allowed_names):
        return []
    shown = ", ".join(names) or "no DNS name and no CN"
    return [Finding(
        "name_not_allowed", "error", leaf.index,
        f"{sentence_start(leaf)} names {shown}; none is in "
        f"client_auth.allowed_names ({', '.join(policy.allowed_names)}).",
        "Add the sender's name to client_auth.allowed_names (\"*.example.com\" covers one "
        "label).",
    )]


def client_auth_usage(leaf: Link, policy: Policy) -> list[Finding]:
    usages = extended_key_usages(leaf.certificate)
    if usages is not None and CLIENT_USAGES & set(usages):
        return []
    if usages is None and not policy.require_client_auth_eku:
        return []
    what = f"its extended key usage lists only {usages_named(usages)}" if usages else \
        "it has no extended key usage extension"
    severity: Severity = "error" if policy.require_client_auth_eku else "warning"
    tail = "" if policy.require_client_auth_eku else \
        " nginx, Apache and OpenSSL-based servers refuse such a client certificate."
    return [Finding(
        "missing_client_auth_eku", severity, leaf.index,
        f"{sentence_start(leaf)} is not marked for TLS client "
        f"authentication: {what}.{tail}",
        "Ask the sender for a certificate with the clientAuth extended key usage"
        + (" (or set client_auth.require_client_auth_eku = false)."
           if policy.require_client_auth_eku else "."),
    )]


def signing_usage(leaf: Link) -> list[Finding]:
    """A client proves who it is by signing the handshake: its key usage, when present,
    must allow that (OpenSSL's SSL client purpose checks the same)."""
    usage = optional_extension(leaf.certificate, x509.KeyUsage)
    if usage is None or usage.digital_signature or usage.key_agreement:
        return []
    return [Finding(
        "missing_client_auth_eku", "error", leaf.index,
        f"{sentence_start(leaf)} is not allowed for TLS client authentication: its key usage "
        "allows neither digital signatures nor key agreement, and a client proves who it is "
        "by signing the handshake.",
        "Ask the sender for a certificate whose key usage includes digitalSignature.",
    )]


def subject_or_alternative_name(leaf: Link) -> list[Finding]:
    """A certificate with an empty subject names its holder only in a critical
    subjectAltName (RFC 5280, 4.2.1.6); cryptography's verifier refuses it otherwise."""
    if leaf.certificate.subject.rdns:
        return []
    try:
        alternative = leaf.certificate.extensions.get_extension_for_class(
            x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        problem = "and no subjectAltName either: it names nobody"
    else:
        if alternative.critical:
            return []
        problem = "and its subjectAltName is not marked critical, as RFC 5280 (4.2.1.6) " \
                  "requires of a certificate whose subject is empty"
    return [Finding(
        "path_validation_failed", "error", leaf.index,
        f"{sentence_start(leaf)} has an empty subject, {problem}.",
        "Ask the sender for a certificate whose subject names it (or whose subjectAltName is "
        "critical).",
    )]
