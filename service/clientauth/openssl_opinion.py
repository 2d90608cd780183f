"""A third opinion: OpenSSL's own per-depth verdicts, recorded during the handshake.

OpenSSL verifies the chain it builds from what the client sent and the trusted
certificates, and the listener records every error it reports (without letting it refuse).
An error that no finding of omgate's explains refuses the chain, quoting OpenSSL, except
where omgate differs on purpose:

- trust and depth errors when the decision was made under other verification settings
  than OpenSSL's (an endpoint with its own ``trust`` or ``verify_depth``), or when pins
  alone decide (no trust anchors);
- validity errors within ``clock_skew_seconds``.
"""

from __future__ import annotations

import datetime as dt

from service.clientauth.chain import ChainAnalysis, Link
from service.clientauth.model import Finding, FindingCode, Policy, VerifyResult
from service.clientauth.wording import describe

# OpenSSL's X509_V_ERR_* numbers and the finding codes that explain each.
_UNFOUND_ISSUER: tuple[FindingCode, ...] = (
    "missing_intermediate", "untrusted_root", "bad_signature", "self_signed",
    "key_identifier_mismatch")
_TRUST: dict[int, tuple[FindingCode, ...]] = {
    2: _UNFOUND_ISSUER,
    18: ("self_signed", "untrusted_root"),
    19: ("untrusted_root", "self_signed"),
    20: _UNFOUND_ISSUER,
    21: _UNFOUND_ISSUER,
    22: ("depth_exceeded",),
    27: ("untrusted_root",),
}
_NOT_YET_VALID, _EXPIRED = 9, 10
_PER_CERTIFICATE: dict[int, tuple[FindingCode, ...]] = {
    # OpenSSL's bound on name constraint checks, among other rare causes
    1: ("path_validation_failed", "chain_too_costly"),
    4: ("bad_signature", "weak_signature_algorithm", "unsupported_key"),
    6: ("bad_signature", "unsupported_key"),
    7: ("bad_signature", "weak_signature_algorithm"),
    _NOT_YET_VALID: ("not_yet_valid",),
    _EXPIRED: ("expired",),
    13: ("not_yet_valid",), 14: ("expired",),
    23: ("revoked",),
    24: ("issuer_not_a_ca",), 32: ("issuer_not_a_ca",), 79: ("issuer_not_a_ca",),
    25: ("path_length_exceeded",),
    30: ("key_identifier_mismatch",), 31: ("key_identifier_mismatch",),
    26: ("missing_client_auth_eku", "issuer_not_a_ca"),  # a CA-less issuer fails it too
    34: ("unknown_critical_extension",),
    41: ("unreadable_certificate",),
    47: ("name_constraints_violated",), 48: ("name_constraints_violated",),
    49: ("name_constraints_violated",), 51: ("name_constraints_violated",),
    52: ("name_constraints_violated",), 53: ("name_constraints_violated",),
    66: ("weak_signature_algorithm",), 67: ("weak_signature_algorithm",),
    68: ("weak_signature_algorithm",),
}


def _link(analysis: ChainAnalysis, subject: str) -> Link | None:
    return next((link for link in analysis.path
                 if link.certificate.subject.rfc4514_string() == subject), None)


def _within_skew(link: Link | None, now: dt.datetime, skew: dt.timedelta) -> bool:
    if link is None:
        return False
    certificate = link.certificate
    return (certificate.not_valid_before_utc - skew <= now
            <= certificate.not_valid_after_utc + skew)


def _explained(result: VerifyResult, link: Link | None, findings: list[Finding]) -> bool:
    if result.error in _TRUST:
        return any(finding.code in _TRUST[result.error] for finding in findings)
    codes = _PER_CERTIFICATE.get(result.error, ())
    return any(finding.code in codes and (link is None or finding.cert in (link.index, None))
               for finding in findings)


def _deliberate(result: VerifyResult, link: Link | None, policy: Policy,
                verified_under: str, now: dt.datetime) -> bool:
    if result.error in _TRUST:
        return not policy.trust_required or verified_under != policy.verification_digest
    if result.error in (_NOT_YET_VALID, _EXPIRED):
        return _within_skew(link, now, policy.clock_skew)
    return False


def unexplained(results: tuple[VerifyResult, ...], verified_under: str,
                analysis: ChainAnalysis, policy: Policy, findings: list[Finding],
                now: dt.datetime) -> list[Finding]:
    """A finding for each OpenSSL error that neither a finding nor a deliberate difference
    explains."""
    added: list[Finding] = []
    reported: set[tuple[int, str]] = set()
    for result in results:
        link = _link(analysis, result.subject)
        if (result.error == 0 or (result.error, result.subject) in reported
                or _explained(result, link, findings)
                or _deliberate(result, link, policy, verified_under, now)):
            continue
        reported.add((result.error, result.subject))
        if result.error in _TRUST and analysis.anchored:
            added.append(_another_path(result, analysis))
            continue
        codes = _TRUST.get(result.error) or _PER_CERTIFICATE.get(result.error)
        what = describe(link) if link else f"the certificate {result.subject or '(unnamed)'}"
        added.append(Finding(
            codes[0] if codes else "path_validation_failed", "error",
            link.index if link else None,
            f"OpenSSL refuses {what} at depth {result.depth}: {result.error_text} (error "
            f"{result.error}), and omgate's own rules found nothing to explain it.",
            "The sender's chain breaks a rule OpenSSL applies (as nginx and Apache would): "
            "the chain must be corrected before it is accepted.",
        ))
    return added


def _another_path(result: VerifyResult, analysis: ChainAnalysis) -> Finding:
    """OpenSSL found no path where omgate found one: it follows the first certificate sent
    that names the right issuer, and a copy of a CA certified by another (a cross-signed
    one) sent before the right one leads it nowhere."""
    path = " -> ".join(describe(link) for link in analysis.path)
    return Finding(
        "path_validation_failed", "error", analysis.path[0].index,
        f"OpenSSL finds no path to a trust anchor in the chain as sent ({result.error_text}, "
        f"error {result.error} at depth {result.depth}), although one exists: {path}. "
        "OpenSSL, and so nginx, Apache and omgate's own listener, follows the first "
        "certificate sent for an issuer, and the chain holds another before it.",
        "The sender must send only its path, in order: its certificate, then each issuer "
        "on that path (leave out cross-signed copies that lead to another root).",
    )
