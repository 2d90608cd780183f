"""The decision: a pure function of a presented identity, a policy and the time.

Three opinions, the strictest wins: omgate's own rules (which explain), cryptography's
RFC 5280 verifier on every path they anchor, and OpenSSL's verdicts from the handshake.
"""

from __future__ import annotations

import datetime as dt

from cryptography.hazmat.primitives.serialization import Encoding

from service.clientauth import openssl_opinion, pathrules, rules, verifier
from service.clientauth.chain import ChainAnalysis, candidate_analyses
from service.clientauth.extensions import certificate_problem
from service.clientauth.keys import costly_key, weak_key
from service.clientauth.model import (
    MAX_JUDGED_BYTES,
    ClientIdentity,
    Decision,
    Finding,
    Outcome,
    Policy,
    Severity,
    UnreadableCertificate,
)
from service.clientauth.pathrules import too_costly
from service.clientauth.wording import sentence_start, subject_of


def _proxy_must_forward(forwarded_format: str) -> str:
    """What the proxy must do for its headers to carry the client certificate."""
    kind, _, header = forwarded_format.partition(":")
    steps = {
        "pem-header": f"for nginx, `ssl_verify_client optional_no_ca;` and `proxy_set_header "
                      f"{header} $ssl_client_escaped_cert;` (Apache: `SSLVerifyClient "
                      f"optional_no_ca` and `RequestHeader set {header} "
                      '"%{SSL_CLIENT_CERT}s"`; HAProxy: `verify optional` on the bind line '
                      f"and `http-request set-header {header} %[ssl_c_der,base64]`)",
        "xfcc": "for Envoy, a validation_context in the DownstreamTlsContext "
                "(trust_chain_verification: ACCEPT_UNTRUSTED), forward_client_cert_details: "
                "SANITIZE_SET and set_current_client_cert_details with cert and chain",
        "aws-alb": "for an AWS ALB, mutual authentication (mTLS) on the HTTPS listener, in "
                   "passthrough or verify mode",
        "traefik": "for Traefik, TLS options with clientAuthType RequestClientCert and the "
                   "passTLSClientCert middleware with pem = true",
        "azure": "for Azure App Service, client certificate mode Optional (or Required)",
        "rfc9440": "it must put the certificate in Client-Cert and its chain in "
                   "Client-Cert-Chain (RFC 9440)",
    }
    return ("The proxy must ask the client for a certificate without judging it, and pass it "
            f"on: {steps.get(kind, 'see its documentation')}. If it does, the client sent "
            "none: in Salesforce, choose a certificate under the outbound message's 'Send "
            "Client Certificate' setting.")


def _no_certificate(identity: ClientIdentity, policy: Policy) -> Finding:
    # request mode reports what require would do: that is the mode it prepares for.
    severity: Severity = "info" if policy.mode == "optional" else "error"
    advertised = identity.handshake.advertised_ca_names if identity.handshake else ()
    if identity.forwarded_format is not None:
        message = ("The trusted proxy forwarded no client certificate (client_auth."
                   f"forwarded_cert = {identity.forwarded_format!r}): either the client sent "
                   "none, or the proxy did not ask for one or did not pass it on.")
        hint = _proxy_must_forward(identity.forwarded_format)
    elif identity.source == "forwarded":
        message = "No client certificate reached omgate with this request."
        hint = ("When a load balancer terminates TLS, set client_auth.forwarded_cert to the "
                "header it forwards the certificate in.")
    elif advertised:
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


def _costly_keys(identity: ClientIdentity) -> list[Finding]:
    """Keys that would make signature checks expensive: refused before any is checked."""
    findings = []
    for index, certificate in enumerate(identity.chain):
        problem = costly_key(certificate)
        if problem is not None:
            findings.append(Finding(
                "unsupported_key", "error", index,
                f"Certificate {index} ({subject_of(certificate)}) has {problem}; "
                "omgate checks no signature with such a key.",
                "Ask the sender for a certificate with an RSA key of 2048 to 8192 bits (public "
                "exponent 65537) or an elliptic-curve key.",
            ))
    return findings


def _weak_keys(analysis: ChainAnalysis, policy: Policy) -> list[Finding]:
    severity: Severity = "error" if policy.reject_weak_signatures else "warning"
    findings = []
    for link in analysis.path[:-1] if analysis.anchored else analysis.path:  # as OpenSSL
        problem = weak_key(link.certificate)
        if problem is not None:
            findings.append(Finding(
                "weak_signature_algorithm", severity, link.index,
                f"{sentence_start(link)} has {problem}, too weak to rely on.",
                "Ask the sender for a certificate with a 2048-bit (or larger) RSA key or a "
                "P-256 key" + ("; client_auth.reject_weak_signatures = false accepts it "
                               "meanwhile." if policy.reject_weak_signatures else "."),
            ))
    return findings


def _has_error(findings: list[Finding]) -> bool:
    return any(finding.severity == "error" for finding in findings)


def _path_findings(analysis: ChainAnalysis, policy: Policy) -> list[Finding]:
    """RFC 5280 on the path built: it must reach an anchor, through CAs allowed to sign."""
    if not policy.trust_required:  # pins alone decide; only the leaf itself is judged
        return pathrules.critical_extensions(analysis.path[:1])
    return [
        *rules.reach_anchor(analysis, policy),
        *rules.unchecked_signatures(analysis),
        *pathrules.critical_extensions(analysis.path),
        *pathrules.issuers_are_cas(analysis),
        *pathrules.key_identifiers(analysis),
        *pathrules.issuance_rules(analysis),
        *pathrules.issuer_usages(analysis),
        *pathrules.path_lengths(analysis),
        *pathrules.name_constraints(analysis),
        *pathrules.certificate_policies(analysis),
    ]


def _verifier_applies(analysis: ChainAnalysis, policy: Policy,
                      findings: list[Finding]) -> bool:
    """Every anchored path longer than the anchor alone, except one whose weak signatures or
    keys the policy deliberately accepts (the verifier refuses those outright)."""
    weak_accepted = any(finding.code == "weak_signature_algorithm" for finding in findings)
    return (policy.trust_required and analysis.anchored and len(analysis.path) > 1
            and not weak_accepted and not _has_error(findings))


def analyse(identity: ClientIdentity, policy: Policy, now: dt.datetime) -> list[Finding]:
    """Every finding about a non-empty presented chain, along the first path to an anchor
    that passes (the findings of the likeliest one when none does)."""
    costly = _costly_keys(identity)
    if costly:
        return costly
    judged = []
    for analysis in candidate_analyses(identity.chain, policy.anchors, policy.known_cas):
        findings = _along(analysis, identity, policy, now)
        if not _has_error(findings):
            return findings
        judged.append(findings)
    return judged[0]


def _along(analysis: ChainAnalysis, identity: ClientIdentity, policy: Policy,
           now: dt.datetime) -> list[Finding]:
    """Every finding about the chain along one path."""
    leaf = analysis.path[0]
    findings = rules.structure(analysis, identity.chain)
    findings += _path_findings(analysis, policy)
    findings += rules.validity(analysis, now, skew=policy.clock_skew,
                               warning_days=policy.expiry_warning_days)
    findings += rules.weak_signatures(analysis, reject=policy.reject_weak_signatures)
    findings += _weak_keys(analysis, policy)
    findings += rules.revocation(analysis, policy)
    findings += rules.allowed_names(leaf, policy)
    findings += rules.client_auth_usage(leaf, policy)
    findings += rules.signing_usage(leaf)
    findings += rules.subject_or_alternative_name(leaf)
    findings += rules.alternative_name_syntax(leaf)
    verified = not _has_error(findings)
    findings += rules.pins(leaf, policy, verified)
    findings += rules.distinguished_name(leaf, policy.issuer_dn, "issuer", verified)
    findings += rules.distinguished_name(leaf, policy.subject_dn, "subject", verified)
    if _verifier_applies(analysis, policy, findings):
        findings += verifier.cross_check(analysis, policy, now)
    if identity.handshake is not None:
        findings += openssl_opinion.unexplained(
            identity.handshake.verify_results, identity.handshake.verified_under, analysis,
            policy, findings, now)
    return findings


def unreadable_certificates(identity: ClientIdentity) -> tuple[UnreadableCertificate, ...]:
    """The presented certificates that cannot be judged: those that did not parse, or, for
    an identity built from parsed certificates (a file, a test), those whose names or
    extensions do not read."""
    if identity.unreadable:
        return identity.unreadable
    return tuple(UnreadableCertificate(index, certificate.public_bytes(Encoding.DER), problem)
                 for index, certificate in enumerate(identity.chain)
                 if (problem := certificate_problem(certificate)) is not None)


def _unreadable(identity: ClientIdentity,
                unreadable: tuple[UnreadableCertificate, ...]) -> list[Finding]:
    if identity.source == "forwarded":
        return [Finding(
            "unreadable_certificate", "error", item.index,
            f"The client certificate a trusted proxy forwarded cannot be read: {item.reason}.",
            "Check that client_auth.forwarded_cert names the format the proxy writes, and "
            "that the proxy forwards the certificate itself, not its names.",
        ) for item in unreadable]
    return [Finding(
        "unreadable_certificate", "error", item.index,
        f"Certificate {item.index} as presented cannot be read ({item.reason}); omgate "
        "decides only on a chain it can read in full.",
        "Ask the sender for a certificate in strict DER (RFC 5280): OpenSSL tolerates some "
        "encodings that omgate's certificate parser refuses.",
    ) for item in unreadable]


def _untrusted_forwarding(identity: ClientIdentity) -> list[Finding]:
    if not identity.ignored_headers:
        return []
    headers = ", ".join(identity.ignored_headers)
    return [Finding(
        "forwarded_from_untrusted_peer", "warning", None,
        f"The peer {identity.peer or '(unknown)'} sent forwarding headers ({headers}) but is "
        "not in server.trusted_proxies; they were removed and ignored.",
        "If that peer is your load balancer, add its address to server.trusted_proxies; if "
        "not, a client tried to pass itself off as someone else.",
    )]


def evaluate(identity: ClientIdentity, policy: Policy,
             now: dt.datetime | None = None) -> Decision:
    """Decide on a presented identity. No I/O; ``now`` is the caller's clock."""
    if policy.mode == "off":
        return Decision("accept", ())
    # certificate times have whole seconds (RFC 5280, 4.1.2.5): compare at that grain
    now = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
    unreadable = () if identity.oversized else unreadable_certificates(identity)
    if identity.oversized:  # judged unread: only keys, cheaply read, name a better cause
        findings = _costly_keys(identity) or [too_costly(
            f"the chain holds {identity.presented_bytes:,} bytes of certificates (omgate "
            f"judges up to {MAX_JUDGED_BYTES:,}; a real sender's is 2,000 to 8,000)")]
    elif unreadable:
        findings = _unreadable(identity, unreadable)
    elif identity.chain:
        findings = analyse(identity, policy, now)
    else:
        findings = [_no_certificate(identity, policy)]
    findings += _untrusted_forwarding(identity)
    outcome: Outcome = "reject" if _has_error(findings) else "accept"
    return Decision(outcome, tuple(findings))
