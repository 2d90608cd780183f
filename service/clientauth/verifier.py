"""A second opinion on every anchored path: cryptography's RFC 5280 client verifier.

The engine's own rules explain; the verifier confirms. It gets exactly the engine's path
(the leaf, the intermediates, the anchor as the only store entry), so it judges that path
and no other, under the same extension policies as the web PKI except where omgate's
configuration deliberately relaxes one: a client certificate without a subjectAltName is
allowed, and one without the clientAuth usage when ``require_client_auth_eku`` is false.
Its time is the current one moved at most ``clock_skew_seconds`` into the path's validity,
the engine's own tolerance. When it refuses, the chain is refused, under the code of the
rule it applied.
"""

from __future__ import annotations

import datetime as dt
import re

from cryptography import x509
from cryptography.x509 import verification

from service.clientauth.chain import ChainAnalysis, Link
from service.clientauth.model import Finding, FindingCode, Policy
from service.clientauth.wording import describe, sentence_start

# The verifier's reasons, by the rule they come from (its messages are not an API: any
# reason not listed here is still a refusal, reported as path_validation_failed).
_RULES: tuple[tuple[str, FindingCode], ...] = (
    ("basicConstraints.cA must be asserted", "issuer_not_a_ca"),
    ("keyUsage.keyCertSign must be asserted", "issuer_not_a_ca"),
    ("path length constraint", "path_length_exceeded"),
    ("name constraint", "name_constraints_violated"),
    ("unaccounted-for critical extension", "unknown_critical_extension"),
    ("required EKU not found", "missing_client_auth_eku"),
    ("EKU nor anyEKU", "missing_client_auth_eku"),
    ("signature", "bad_signature"),
)
# The one refusal that is not a verdict: cryptography does not evaluate directoryName
# name constraints at all (nameconstraints.py and OpenSSL do).
_ABSTAINS = "unsupported directoryName constraint"
_PROCESSING = re.compile(r"\s*\(encountered processing <Certificate\(subject=<Name\((.*?)\)>"
                         r".*$", re.DOTALL)


def _extension_policies(policy: Policy) -> tuple[verification.ExtensionPolicy,
                                                 verification.ExtensionPolicy]:
    leaf = verification.ExtensionPolicy.webpki_defaults_ee().may_be_present(
        x509.SubjectAlternativeName, verification.Criticality.AGNOSTIC, None)
    if not policy.require_client_auth_eku:
        leaf = leaf.may_be_present(x509.ExtendedKeyUsage, verification.Criticality.AGNOSTIC,
                                   None)
    return verification.ExtensionPolicy.webpki_defaults_ca(), leaf


def validation_time(path: tuple[Link, ...], now: dt.datetime,
                    skew: dt.timedelta) -> dt.datetime:
    """``now``, moved into the path's common validity by at most ``skew``."""
    start = max(link.certificate.not_valid_before_utc for link in path)
    end = min(link.certificate.not_valid_after_utc for link in path)
    moved = min(max(now, start), end)
    return moved if abs(moved - now) <= skew else now


def _named(analysis: ChainAnalysis, subject: str) -> Link:
    return next((link for link in analysis.path
                 if link.certificate.subject.rfc4514_string() == subject), analysis.path[0])


def _reason(error: verification.VerificationError) -> tuple[str, str]:
    """The verifier's reason without its certificate dump, and the subject it names."""
    text = str(error)
    found = _PROCESSING.search(text)
    subject = found.group(1) if found else ""
    text = _PROCESSING.sub("", text).removeprefix("validation failed: ")
    return text.removeprefix("candidates exhausted: "), subject


def _code(reason: str) -> FindingCode:
    return next((code for needle, code in _RULES if needle in reason), "path_validation_failed")


def cross_check(analysis: ChainAnalysis, policy: Policy, now: dt.datetime) -> list[Finding]:
    """The verifier's refusal of the engine's anchored path, as a finding (or nothing)."""
    path = analysis.path
    anchor = path[-1].certificate
    intermediates = [link.certificate for link in path[1:-1]]
    ca_policy, leaf_policy = _extension_policies(policy)
    try:
        verifier = (verification.PolicyBuilder()
                    .store(verification.Store([anchor]))
                    .time(validation_time(path, now, policy.clock_skew))
                    .max_chain_depth(max(len(intermediates), 1))
                    .extension_policies(ca_policy=ca_policy, ee_policy=leaf_policy)
                    .build_client_verifier())
        verifier.verify(path[0].certificate, intermediates)
    except verification.VerificationError as error:
        reason, subject = _reason(error)
        if _ABSTAINS in reason:  # it cannot judge them; omgate's own rule and OpenSSL do
            return []
        concerned = _named(analysis, subject) if subject else path[0]
        return [Finding(
            _code(reason), "error", concerned.index,
            f"RFC 5280 path validation (cryptography's verifier) refuses the path from "
            f"{describe(path[0])} to {describe(path[-1])}"
            + (f" at {describe(concerned)}" if subject else "") + f": {reason}.",
            f"{sentence_start(concerned)} does not meet the rule quoted; the sender must "
            "present a chain whose certificates a standard verifier accepts.",
        )]
    return []
