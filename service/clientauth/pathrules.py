"""RFC 5280 path rules on the path the engine built (section 6.1), each with its own code.

- ``issuer_not_a_ca``: every certificate that signs another on the path is a CA allowed to
  sign certificates (basicConstraints cA=TRUE, keyCertSign when keyUsage is present; a
  version 1 certificate only as the trust anchor);
- ``path_length_exceeded``: pathLenConstraint, counting the non-self-issued intermediates
  below the CA that sets it;
- ``name_constraints_violated``: nameConstraints of every CA on the path;
- ``unknown_critical_extension``: a critical extension omgate does not process, anywhere
  on the path;
- ``unreadable_certificate``: extensions that cannot be parsed (never read as absent).
"""

from __future__ import annotations

from cryptography import x509

from service.clientauth import certificatepolicies, nameconstraints
from service.clientauth.chain import ChainAnalysis, Link, is_self_signed
from service.clientauth.extensions import (
    CLIENT_USAGES,
    READ_ERRORS,
    ca_problem,
    extended_key_usages,
    extensions_problem,
    key_identifier_problem,
    optional_extension,
    unknown_critical,
    usages_named,
)
from service.clientauth.model import Finding
from service.clientauth.wording import describe, sentence_start, subject_of


def _self_issued(certificate: x509.Certificate) -> bool:
    return certificate.subject == certificate.issuer


def _is_path_anchor(analysis: ChainAnalysis, position: int) -> bool:
    return analysis.anchored and position == len(analysis.path) - 1


def issuers_are_cas(analysis: ChainAnalysis) -> list[Finding]:
    findings = []
    for position, link in enumerate(analysis.path[1:], start=1):
        problem = ca_problem(link.certificate, as_anchor=_is_path_anchor(analysis, position))
        if problem is None:
            continue
        signed = analysis.path[position - 1]
        findings.append(Finding(
            "issuer_not_a_ca", "error", link.index,
            f"{sentence_start(link)} signed {describe(signed)}, but {problem}: it may not "
            "issue certificates, so the certificate it signed proves nothing.",
            "The sender must present a certificate issued by its CA, followed by that CA's "
            "intermediates; a certificate signed with an end-entity certificate's key is a "
            "forgery or a mistake.",
        ))
    return findings


def issuer_usages(analysis: ChainAnalysis) -> list[Finding]:
    """A CA whose extended key usage leaves out clientAuth may not issue client certificates
    (OpenSSL's purpose check, and cryptography's verifier, refuse such a path)."""
    findings = []
    for link in analysis.path[1:]:
        usages = extended_key_usages(link.certificate)
        if usages is None or CLIENT_USAGES & set(usages):
            continue
        findings.append(Finding(
            "missing_client_auth_eku", "error", link.index,
            f"{sentence_start(link)} is a CA whose extended key usage lists only "
            f"{usages_named(usages)}: "
            "the certificates it issues may not be used for TLS client authentication.",
            "The sender needs a certificate from a CA hierarchy issued for client "
            "authentication (clientAuth in every CA's extended key usage, or none listed).",
        ))
    return findings


def key_identifiers(analysis: ChainAnalysis) -> list[Finding]:
    """Each certificate's Authority Key Identifier fits the CA that signed it: OpenSSL does
    not take a CA whose key identifier differs as the issuer, and reports the issuer as
    missing (errors 20 and 21) although it was sent."""
    findings = []
    for position, link in enumerate(analysis.path[:-1]):
        issuer = analysis.path[position + 1]
        problem = key_identifier_problem(link.certificate, issuer.certificate)
        if problem is not None:
            findings.append(Finding(
                "key_identifier_mismatch", "error", link.index,
                f"{sentence_start(link)} is signed by {describe(issuer)}, but {problem}: "
                "OpenSSL (nginx, Apache, omgate's own listener) then looks for another "
                "issuer and finds none.",
                "The sender's chain holds a CA certificate other than the one that issued "
                "its certificate (often an old or a cross-signed copy with the same name): "
                "it must send the CA certificate whose key identifier its certificate names."
                " If the CA certificate is in client_auth.trust, replace it there.",
            ))
    return findings


def issuance_rules(analysis: ChainAnalysis) -> list[Finding]:
    """What RFC 5280 requires of every certificate a CA issues, on an anchored path: a
    positive serial number (4.1.2.2; cryptography will soon refuse to read others), an
    Authority Key Identifier naming the issuer's key unless the certificate is self-signed
    (4.2.1.1), and a Subject Key Identifier in a CA certificate (4.2.1.2). OpenSSL tolerates
    all three. The trust anchor is held to the last two: its serial is the operator's
    concern alone."""
    if not analysis.anchored:
        return []
    findings = []
    for position, link in enumerate(analysis.path):
        anchor = _is_path_anchor(analysis, position)
        problem = _issuance_problem(link.certificate, is_ca=position > 0, anchor=anchor)
        if problem is None:
            continue
        fix = ("Replace it in client_auth.trust with a certificate of the same CA that does "
               "(ask the CA)." if anchor else
               "The CA that issued it must reissue it as RFC 5280 requires; until then no "
               "verifier can rely on it.")
        findings.append(Finding(
            "path_validation_failed", "error", link.index,
            f"{sentence_start(link)} {problem}; OpenSSL tolerates it, RFC 5280 and omgate "
            "do not.", fix))
    return findings


def _issuance_problem(certificate: x509.Certificate, *, is_ca: bool,
                      anchor: bool) -> str | None:
    if not anchor and certificate.serial_number <= 0:
        return f"has the serial number {certificate.serial_number}, not a positive one (4.1.2.2)"
    if certificate.version == x509.Version.v1:
        return None if anchor else "is a version 1 certificate, with no extensions at all"
    authority = optional_extension(certificate, x509.AuthorityKeyIdentifier)
    if (authority is None or authority.key_identifier is None) \
            and not is_self_signed(certificate):
        return "has no Authority Key Identifier naming its issuer's key (4.2.1.1)"
    if is_ca and optional_extension(certificate, x509.SubjectKeyIdentifier) is None:
        return "is a CA certificate without a Subject Key Identifier (4.2.1.2)"
    return None


def certificate_policies(analysis: ChainAnalysis) -> list[Finding]:
    """RFC 5280's policy processing on an anchored path (6.1.3 to 6.1.5), and the
    criticality RFC 5280 requires of policyConstraints (4.2.1.11)."""
    if not analysis.anchored or len(analysis.path) < 2:
        return []
    findings = []
    for link in analysis.path[1:-1]:
        if _noncritical(link.certificate, x509.PolicyConstraints):
            findings.append(Finding(
                "path_validation_failed", "error", link.index,
                f"{sentence_start(link)} has a policyConstraints extension not marked "
                "critical; RFC 5280 (4.2.1.11) requires it critical, so that a verifier "
                "that does not process it refuses the path rather than ignore it.",
                "The CA must reissue its certificate with policyConstraints critical.",
            ))
    below_anchor = list(reversed(analysis.path[:-1]))
    failure = certificatepolicies.policy_failure([link.certificate for link in below_anchor])
    if failure is not None:
        link = below_anchor[failure.position]
        findings.append(Finding(
            "path_validation_failed", "error", link.index,
            f"Certificate policies (RFC 5280, 6.1) fail at {describe(link)}: "
            f"{failure.reason}.",
            "The CA hierarchy requires a certificate policy that the sender's certificates "
            "do not carry: the sender needs a certificate issued under the policy its CAs "
            "require.",
        ))
    return findings


def _noncritical(certificate: x509.Certificate, kind: type[x509.ExtensionType]) -> bool:
    try:
        return not certificate.extensions.get_extension_for_class(kind).critical
    except x509.ExtensionNotFound:
        return False
    except READ_ERRORS:  # unreadable: critical_extensions says so
        return False


def path_lengths(analysis: ChainAnalysis) -> list[Finding]:
    findings = []
    for position, link in enumerate(analysis.path[1:], start=1):
        constraints = optional_extension(link.certificate, x509.BasicConstraints)
        if constraints is None or constraints.path_length is None:
            continue
        below = [item for item in analysis.path[1:position]
                 if not _self_issued(item.certificate)]
        if len(below) > constraints.path_length:
            findings.append(Finding(
                "path_length_exceeded", "error", link.index,
                f"{sentence_start(link)} allows at most {constraints.path_length} "
                f"intermediate CA certificate(s) below it (pathLenConstraint), and the path "
                f"has {len(below)}: {', '.join(subject_of(item.certificate) for item in below)}.",
                "The sender's chain goes through more CAs than its root allows: it must use a "
                "certificate issued within its CA's allowed depth.",
            ))
    return findings


# Name checks one path may ask for (names times subtrees, summed over every certificate a
# constraining CA is above). OpenSSL refuses a single certificate past 2**20; cryptography's
# verifier then compares each pair in turn (about 0.2 s for 2**20 here), so omgate's bound
# is lower: a real constrained CA (tens of subtrees) and leaf (a few names) use a few
# hundred.
MAX_NAME_CHECKS = 2**16
# Violations reported for one certificate under one CA: the rest are counted.
SHOWN_VIOLATIONS = 3


def _constrained_pairs(analysis: ChainAnalysis
                       ) -> list[tuple[Link, x509.NameConstraints, list[tuple[int, Link]]]]:
    """Each CA on the path with name constraints, with the certificates below it that they
    apply to (self-issued intermediates excepted, as RFC 5280 says)."""
    pairs = []
    for position, issuer in enumerate(analysis.path[1:], start=1):
        constraints = optional_extension(issuer.certificate, x509.NameConstraints)
        if constraints is not None:
            below = [(index, link) for index, link in enumerate(analysis.path[:position])
                     if index == 0 or not _self_issued(link.certificate)]
            pairs.append((issuer, constraints, below))
    return pairs


def name_constraints(analysis: ChainAnalysis) -> list[Finding]:
    """Name constraints on an anchored path (a path that reaches no anchor is refused for
    that, and its constraints, which anyone could have written, cost nothing)."""
    if not analysis.anchored:
        return []
    pairs = _constrained_pairs(analysis)
    checks = sum(nameconstraints.name_checks(link.certificate, constraints)
                 for _issuer, constraints, below in pairs for _index, link in below)
    if checks > MAX_NAME_CHECKS:
        return [too_costly(
            f"its name constraints ask for {checks:,} comparisons of a name with a subtree "
            f"(omgate checks up to {MAX_NAME_CHECKS:,})")]
    findings = []
    for issuer, constraints, below in pairs:
        permitted = nameconstraints.index_subtrees(list(constraints.permitted_subtrees or ()))
        excluded = nameconstraints.index_subtrees(list(constraints.excluded_subtrees or ()))
        for index, link in below:
            found = nameconstraints.violations(link.certificate, permitted, excluded,
                                               is_leaf=index == 0)
            shown = found[:SHOWN_VIOLATIONS]
            for number, violation in enumerate(shown, start=1):
                more = len(found) - len(shown) if number == len(shown) else 0
                findings.append(_name_violation(link, issuer, violation, more))
    return findings


def too_costly(why: str) -> Finding:
    """The chain was refused before a verdict because judging it would cost too much."""
    return Finding(
        "chain_too_costly", "error", None,
        f"omgate stopped judging this chain: {why}. A chain this costly to check is "
        "refused, whoever issued it.",
        "Ask the sender to present its certificate and the intermediates of its one path, "
        "each once; a CA with thousands of name constraints over a certificate with "
        "thousands of names is not something a real sender uses.",
    )


def _name_violation(link: Link, issuer: Link, violation: nameconstraints.Violation,
                    more: int) -> Finding:
    others = f" ({more} more of its names are not allowed either)" if more else ""
    return Finding(
        "name_constraints_violated", "error", link.index,
        f"{sentence_start(link)} carries the name {violation.name}, which "
        f"{violation.reason} of the name constraints of {describe(issuer)}{others}.",
        f"{subject_of(issuer.certificate)} may only issue certificates for the names its "
        "constraints allow; the sender needs a certificate from a CA allowed to issue "
        "that name.",
    )


def critical_extensions(links: tuple[Link, ...]) -> list[Finding]:
    findings = []
    for link in links:
        problem = extensions_problem(link.certificate)
        if problem is not None:
            findings.append(Finding(
                "unreadable_certificate", "error", link.index,
                f"The extensions of {describe(link)} cannot be read ({problem}); omgate "
                "decides only on certificates it can read in full.",
                "Ask the sender for a certificate encoded as RFC 5280 requires (each "
                "extension once, each well formed).",
            ))
            continue
        unknown = unknown_critical(link.certificate)
        if unknown:
            listed = ", ".join(oid.dotted_string for oid in unknown)
            findings.append(Finding(
                "unknown_critical_extension", "error", link.index,
                f"{sentence_start(link)} has critical extension(s) {listed} that omgate does "
                "not process; RFC 5280 says a certificate with an unrecognised critical "
                "extension must be refused.",
                "Ask the sender's CA for a certificate without that critical extension (or "
                "with it marked non-critical).",
            ))
    return findings
