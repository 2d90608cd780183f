"""A policy's fingerprint (which policy decided) and its description in words."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from service.clientauth import DistinguishedName, Pin, Policy
from service.clientauth.summary import fingerprint

MODE_IN_WORDS = {
    "off": "No client certificate is asked for.",
    "request": "Client certificates are asked for, checked and logged; no message is refused "
               "for one (a failing chain is a would-be rejection).",
    "optional": "Client certificates are asked for; a client without one is served, one whose "
                "certificate fails the policy is refused.",
    "require": "Every client must present a certificate that passes the policy; others are "
               "refused.",
}


def _canonical(value: Any) -> Any:
    """A JSON-able form of a policy field, equal for equal settings."""
    if isinstance(value, x509.Certificate):
        return fingerprint(value)
    if isinstance(value, x509.CertificateRevocationList):
        return hashlib.sha256(value.public_bytes(Encoding.DER)).hexdigest()
    if isinstance(value, Pin):
        return str(value)
    if isinstance(value, DistinguishedName):
        return sorted(sorted(rdn) for rdn in value.rdns)
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, tuple | list):
        return [_canonical(item) for item in value]
    return value


def policy_fingerprint(policy: Policy) -> str:
    """SHA-256 over every rule of the policy but its mode (recorded apart): equal
    fingerprints, equal rules."""
    rules = {field.name: _canonical(getattr(policy, field.name))
             for field in dataclasses.fields(policy) if field.name != "mode"}
    return hashlib.sha256(json.dumps(rules, sort_keys=True).encode()).hexdigest()


def describe_policy(policy: Policy) -> list[str]:
    """The policy's rules, one sentence each, for the console's overview."""
    lines = [MODE_IN_WORDS[policy.mode]]
    if policy.anchors:
        names = "; ".join(anchor.subject.rfc4514_string() for anchor in policy.anchors)
        lines.append(f"Chains must end at a trusted CA: {names}.")
    elif not policy.pins:
        lines.append("No CA is trusted (client_auth.trust is empty): every chain fails.")
    if policy.known_cas:
        lines.append(f"{len(policy.known_cas)} configured intermediate(s) may complete a path.")
    lines.append(f"At most {policy.verify_depth} CA certificate(s) above the client "
                 "certificate (verify_depth).")
    if policy.pins:
        kind = "alone decide" if not policy.trust_required else "must match too"
        lines.append(f"{len(policy.pins)} pin(s) {kind}: "
                     + ", ".join(str(pin) for pin in policy.pins) + ".")
    for label, name in (("issuer", policy.issuer_dn), ("subject", policy.subject_dn)):
        if name is not None:
            lines.append(f"The client certificate's {label} must be {name.text}.")
    if policy.allowed_names:
        lines.append("Its names must include one of " + ", ".join(policy.allowed_names) + ".")
    if policy.require_client_auth_eku:
        lines.append("It must be marked for TLS client authentication.")
    if policy.crls:
        lines.append(f"{len(policy.crls)} CRL(s) are checked.")
    return lines
