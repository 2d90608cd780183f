"""The decision: a pure function of a presented identity, a policy and the time."""

from __future__ import annotations

import datetime as dt

from cryptography.x509 import verification

from service.clientauth import rules
from service.clientauth.chain import ChainAnalysis, analyse_chain
from service.clientauth.model import ClientIdentity, Decision, Finding, Policy, Severity
from service.clientauth.names import has_subject_alternative_name
from service.clientauth.rules import marked_for_client_auth


def _no_certificate(identity: ClientIdentity, policy: Policy) -> Finding:
    # request mode reports what require would do: that is the mode it prepares for.
    severity: Severity = "info" if policy.mode == "optional" else "error"
    advertised = identity.handshake.advertised_ca_names if identity.handshake else ()
    if identity.source == "forwarded":
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


def _rfc5280_cross_check(analysis: ChainAnalysis, policy: Policy,
                         now: dt.datetime) -> list[Finding]:
    """Confirm a clean path with cryptography's client verifier, where its rules fit.

    It needs a leaf with a SAN and the clientAuth usage, modern signatures and
    certificates valid at this instant (it knows no clock skew); other chains are
    judged by the rules above alone.
    """
    leaf = analysis.path[0].certificate
    fits = (analysis.anchored and has_subject_alternative_name(leaf)
            and marked_for_client_auth(leaf)
            and not any(link.certificate.signature_algorithm_oid.dotted_string
                        in rules.WEAK_SIGNATURES for link in analysis.path)
            and all(link.certificate.not_valid_before_utc <= now
                    <= link.certificate.not_valid_after_utc for link in analysis.path))
    if not fits:
        return []
    anchor = analysis.path[-1].certificate
    intermediates = [link.certificate for link in analysis.path[1:-1]]
    try:
        verifier = (verification.PolicyBuilder()
                    .store(verification.Store([anchor]))
                    .time(now)
                    .max_chain_depth(max(policy.verify_depth, len(intermediates)))
                    .build_client_verifier())
        verifier.verify(leaf, intermediates)
    except verification.VerificationError as error:
        return [Finding(
            "untrusted_root", "error", analysis.path[0].index,
            f"RFC 5280 path validation (cryptography's client verifier) rejects the path "
            f"from {rules.describe(analysis.path[0])}: {error}.",
            "Ask the sender for a chain whose CA certificates are marked as CAs and allowed "
            "to sign certificates.",
        )]
    except (ValueError, TypeError):
        return []  # a key or extension that the verifier cannot read: nothing to add
    return []


def analyse(identity: ClientIdentity, policy: Policy, now: dt.datetime) -> list[Finding]:
    """Every finding about a non-empty presented chain."""
    analysis = analyse_chain(identity.chain, policy.anchors, policy.known_cas)
    leaf = analysis.path[0]
    findings = rules.structure(analysis, identity.chain)
    if policy.trust_required:
        findings += rules.reach_anchor(analysis, policy)
        findings += rules.unchecked_signatures(analysis)
    findings += rules.validity(analysis, policy, now)
    findings += rules.weak_signatures(analysis, policy)
    findings += rules.revocation(analysis, policy)
    findings += rules.pins(leaf, policy)
    findings += rules.distinguished_name(leaf, policy.issuer_dn, "issuer")
    findings += rules.distinguished_name(leaf, policy.subject_dn, "subject")
    findings += rules.allowed_names(leaf, policy)
    findings += rules.client_auth_usage(leaf, policy)
    if policy.trust_required and not any(f.severity == "error" for f in findings):
        findings += _rfc5280_cross_check(analysis, policy, now)
    return findings


def _unreadable(identity: ClientIdentity) -> list[Finding]:
    return [Finding(
        "unreadable_certificate", "error", item.index,
        f"Certificate {item.index} as presented cannot be read ({item.reason}); omgate "
        "decides only on a chain it can read in full.",
        "Ask the sender for a certificate in strict DER (RFC 5280): OpenSSL tolerates some "
        "encodings that omgate's certificate parser refuses.",
    ) for item in identity.unreadable]


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
    if identity.unreadable:
        findings = _unreadable(identity)
    elif identity.chain:
        findings = analyse(identity, policy, now or dt.datetime.now(dt.UTC))
    else:
        findings = [_no_certificate(identity, policy)]
    findings += _untrusted_forwarding(identity)
    outcome = "reject" if any(f.severity == "error" for f in findings) else "accept"
    return Decision(outcome, tuple(findings))
