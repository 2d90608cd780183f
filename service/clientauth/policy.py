"""The decision: a pure function of a presented identity, a policy and the time.

This first version reads OpenSSL's per-depth verify results for TLS
identities; path building and the full rule set replace it behind the same
signature.
"""

from __future__ import annotations

import datetime as dt

from service.clientauth.model import ClientIdentity, Decision, Finding, Policy, Severity

# OpenSSL X509_V_ERR_* codes and the finding each one means.
_OPENSSL_FINDINGS: dict[int, tuple[str, str]] = {
    2: ("untrusted_root", "Add the issuing CA to client_auth.trust, or ask the sender to send "
                          "its full chain."),
    7: ("bad_signature", "The certificate was altered or was not issued by the CA it names; "
                         "ask the sender for a fresh copy of its chain."),
    9: ("not_yet_valid", "Check the clocks on both sides, or wait until the certificate's "
                         "notBefore date."),
    10: ("expired", "Ask the sender to renew the certificate (Salesforce rotates its client "
                    "certificate yearly)."),
    18: ("self_signed", "Pin this certificate (client_auth.pins) or add it to "
                        "client_auth.trust if you really mean to trust it."),
    19: ("untrusted_root", "Add the chain's root CA to client_auth.trust."),
    20: ("untrusted_root", "Add the issuing CA to client_auth.trust, or ask the sender to send "
                           "its intermediate certificates."),
    21: ("untrusted_root", "Add the issuing CA to client_auth.trust, or ask the sender to send "
                           "its intermediate certificates."),
    22: ("depth_exceeded", "Raise client_auth.verify_depth by one, or trust the intermediate "
                           "directly."),
    23: ("revoked", "The certificate was revoked; the sender must use a new one."),
}
_FALLBACK = ("untrusted_root", "Check the chain against client_auth.trust.")


def _no_certificate(identity: ClientIdentity, policy: Policy) -> Finding:
    # request mode reports what require would do: that is the mode it prepares for.
    severity: Severity = "info" if policy.mode == "optional" else "error"
    advertised = identity.handshake.advertised_ca_names if identity.handshake else ()
    if advertised:
        names = "; ".join(advertised)
        message = (f"The client sent no certificate. The CertificateRequest listed these CA "
                   f"names: {names}. Java clients, Salesforce among them, send a certificate "
                   "only when its chain matches one of the listed names.")
        hint = ('Set client_auth.advertise_ca_names = "none" so any certificate is sent, or '
                "list the CA that issued the sender's certificate.")
    else:
        message = ("The client sent no certificate. The CertificateRequest listed no CA names, "
                   "so a client with any certificate configured would have sent it: this "
                   "client has none configured for this endpoint.")
        hint = ("In Salesforce, choose a certificate under the outbound message's "
                "'Send Client Certificate' setting (or the API client certificate).")
    return Finding("no_client_cert", severity, None, message, hint)


def _presented_index(identity: ClientIdentity, subject: str) -> int | None:
    for index, certificate in enumerate(identity.chain):
        if certificate.subject.rfc4514_string() == subject:
            return index
    return None


def _openssl_findings(identity: ClientIdentity) -> list[Finding]:
    findings: dict[tuple[str, int | None], Finding] = {}
    results = identity.handshake.verify_results if identity.handshake else ()
    for result in results:
        if result.error == 0:
            continue
        code, hint = _OPENSSL_FINDINGS.get(result.error, _FALLBACK)
        index = _presented_index(identity, result.subject)
        where = f"certificate {index} ({result.subject})" if index is not None else result.subject
        message = f"OpenSSL: {result.error_text} at depth {result.depth}, {where}."
        findings.setdefault((code, index), Finding(code, "error", index, message, hint))
    return list(findings.values())


def evaluate(identity: ClientIdentity, policy: Policy,
             now: dt.datetime | None = None) -> Decision:
    """Decide on a presented identity. No I/O; ``now`` is the caller's clock."""
    del now  # the OpenSSL-based rules already applied the time
    if policy.mode == "off":
        return Decision("accept", ())
    if not identity.chain:
        finding = _no_certificate(identity, policy)
        return Decision("reject" if finding.severity == "error" else "accept", (finding,))
    findings = tuple(_openssl_findings(identity))
    outcome = "reject" if any(f.severity == "error" for f in findings) else "accept"
    return Decision(outcome, findings)
