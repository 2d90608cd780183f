"""Certificate policies along a path (RFC 5280, 6.1.2 to 6.1.5), with the initial inputs a
client-certificate policy has: any policy acceptable, no explicit policy required, mapping
and anyPolicy not inhibited at the start.

What the path's own certificates can still require: a CA's policyConstraints
(requireExplicitPolicy, inhibitPolicyMapping), inhibitAnyPolicy and policyMappings. When
the path then has no policy valid all the way down while an explicit policy is required,
it is refused. cryptography's verifier does not run on every path (it is skipped when weak
signatures are accepted) and OpenSSL processes policies only when asked to, so omgate
does this itself, on every anchored path.

The valid policy tree is kept one depth at a time (each valid policy and its expected
policies): whether a policy is valid at the end, and why not, is all a verdict needs, and
a level holds at most the distinct policies named, so a path cannot make it grow beyond
what its certificates list (the tree explosion of CVE-2023-0464 does not arise).
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import ExtensionOID

from service.clientauth import der
from service.clientauth.extensions import READ_ERRORS, optional_extension

ANY_POLICY = "2.5.29.32.0"
Level = dict[str, frozenset[str]]  # valid policy -> expected policy set


@dataclass(frozen=True)
class PolicyFailure:
    position: int  # index in the certificates given (0 = the one below the anchor)
    reason: str


@dataclass
class _State:
    explicit: int
    inhibit_any: int
    mapping: int
    level: Level | None  # None: the valid policy tree is NULL


def _listed(certificate: x509.Certificate) -> list[str] | None:
    policies = optional_extension(certificate, x509.CertificatePolicies)
    return None if policies is None else [
        item.policy_identifier.dotted_string for item in policies]


def _next_level(level: Level, listed: list[str], any_allowed: bool) -> Level:
    """6.1.3 (d): the nodes of the next depth."""
    new: Level = {}
    for oid in listed:
        if oid == ANY_POLICY:
            continue
        if any(oid in expected for expected in level.values()) or ANY_POLICY in level:
            new[oid] = frozenset({oid})
    if ANY_POLICY in listed and any_allowed:
        for expected in level.values():
            for oid in expected:
                new.setdefault(oid, frozenset({oid}))
    return new


def _self_issued(certificate: x509.Certificate) -> bool:
    return certificate.subject == certificate.issuer


def _mappings(certificate: x509.Certificate) -> list[tuple[str, str]] | None:
    try:
        extension = certificate.extensions.get_extension_for_oid(ExtensionOID.POLICY_MAPPINGS)
    except x509.ExtensionNotFound:
        return None
    except READ_ERRORS:  # unreadable extensions: refused as such by another rule
        return None
    value = extension.value
    raw = value.value if isinstance(value, x509.UnrecognizedExtension) else value.public_bytes()
    return der.policy_mappings(raw)


def _apply_mappings(state: _State, certificate: x509.Certificate) -> str | None:
    """6.1.4 (a) and (b)."""
    try:
        pairs = _mappings(certificate)
    except ValueError as error:
        return f"its policyMappings cannot be read ({error})"
    if pairs is None:
        return None
    if any(ANY_POLICY in pair for pair in pairs):
        return "its policy mappings map anyPolicy, which RFC 5280 forbids"
    if state.level is None:
        return None
    mapped: dict[str, set[str]] = {}
    for issuer_policy, subject_policy in pairs:
        mapped.setdefault(issuer_policy, set()).add(subject_policy)
    for issuer_policy, subject_policies in mapped.items():
        if state.mapping > 0:
            if issuer_policy in state.level or ANY_POLICY in state.level:
                state.level[issuer_policy] = frozenset(subject_policies)
        else:
            state.level.pop(issuer_policy, None)
    if not state.level:
        state.level = None
    return None


def _count_down(state: _State, certificate: x509.Certificate) -> None:
    """6.1.4 (h), (i) and (j)."""
    if not _self_issued(certificate):
        state.explicit = max(state.explicit - 1, 0)
        state.mapping = max(state.mapping - 1, 0)
        state.inhibit_any = max(state.inhibit_any - 1, 0)
    constraints = optional_extension(certificate, x509.PolicyConstraints)
    if constraints is not None:
        if constraints.require_explicit_policy is not None:
            state.explicit = min(state.explicit, constraints.require_explicit_policy)
        if constraints.inhibit_policy_mapping is not None:
            state.mapping = min(state.mapping, constraints.inhibit_policy_mapping)
    inhibit = optional_extension(certificate, x509.InhibitAnyPolicy)
    if inhibit is not None:
        state.inhibit_any = min(state.inhibit_any, inhibit.skip_certs)


def _no_valid_policy(position: int, state: _State) -> PolicyFailure:
    return PolicyFailure(position, "an explicit certificate policy is required from here "
                         "down (a CA's policyConstraints requireExplicitPolicy), and no "
                         "policy is valid for the path this far")


def policy_failure(certificates: list[x509.Certificate]) -> PolicyFailure | None:
    """Why the path fails RFC 5280's policy processing, or None. ``certificates`` are the
    path below the trust anchor, from the one the anchor issued down to the client's."""
    count = len(certificates)
    state = _State(count + 1, count + 1, count + 1, {ANY_POLICY: frozenset({ANY_POLICY})})
    for position, certificate in enumerate(certificates):
        last = position == count - 1
        listed = _listed(certificate)
        if listed is None or state.level is None:
            state.level = None
        else:
            any_allowed = state.inhibit_any > 0 or (not last and _self_issued(certificate))
            state.level = _next_level(state.level, listed, any_allowed) or None
        if state.explicit == 0 and state.level is None:
            return _no_valid_policy(position, state)
        if last:
            break
        problem = _apply_mappings(state, certificate)
        if problem is not None:
            return PolicyFailure(position, problem)
        _count_down(state, certificate)
    leaf_constraints = optional_extension(certificates[-1], x509.PolicyConstraints)
    explicit = max(state.explicit - 1, 0)
    if leaf_constraints is not None and leaf_constraints.require_explicit_policy == 0:
        explicit = 0
    if explicit == 0 and state.level is None:
        return _no_valid_policy(count - 1, state)
    return None
