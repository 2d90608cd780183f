"""What judging a chain costs: bounded for every chain a client can present, before any
certificate of it is trusted.

The policy runs for every new chain, in the TLS verify callback with ``reject_with =
"handshake"``: its cost is CPU any client can spend. A self-made root with thousands of
name constraints over a leaf with thousands of names once cost 7.4 s a handshake. Now a
path that reaches no trust anchor has its constraints skipped, a trusted one that would
ask for too many comparisons ends as ``chain_too_costly``, and no chain within the size
limits, of any shape, costs more than 50 ms of evaluation.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import time
from collections.abc import Callable

import pytest
from costly_chains import constrained_root, many_named_leaf
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, assume, given, settings, target
from hypothesis import strategies as st

from service.clientauth import Decision, Policy, evaluate
from service.clientauth.model import MAX_JUDGED_BYTES
from service.clientauth.presented import _read_chain
from service.clientauth.summary import fingerprint
from service.gate.decision_log import chain_summary

NOW = dt.datetime.now(dt.UTC)
LIMIT_SECONDS = 0.050
# What any client can present (OpenSSL's default limit on a peer's certificate list), and
# what omgate judges of it (beyond, chain_too_costly without reading it).
PRESENTABLE_BYTES = 100 * 1024
KEYS = [ec.generate_private_key(ec.SECP256R1()) for _ in range(6)]


def cpu_of(judge: Callable[[], Decision]) -> tuple[float, Decision]:
    """The least CPU time of three runs (the machine is shared), and the decision."""
    best, decision = float("inf"), None
    for _ in range(3):
        started = time.thread_time()
        decision = judge()
        best = min(best, time.thread_time() - started)
    assert decision is not None
    return best, decision


def judged(chain: list[x509.Certificate], policy: Policy) -> Callable[[], Decision]:
    """Reading the presented bytes and deciding on them, as the listener does."""
    ders = [certificate.public_bytes(Encoding.DER) for certificate in chain]

    def judge() -> Decision:
        return evaluate(_read_chain(tuple(ders)).identity("tls", "192.0.2.1"), policy, NOW)
    return judge


@pytest.mark.parametrize("trusted", [False, True], ids=["self-made root", "trusted root"])
def test_the_reported_chain_costs_no_time(trusted):
    """The review's chain: 1,800 subtrees over 1,800 names, 70 KB in all (7.4 s a handshake
    before): refused as too costly, unread."""
    root, key = constrained_root(900)
    leaf, _ = many_named_leaf(root, key, 1800)
    anchors = (root,) if trusted else ()
    seconds, decision = cpu_of(judged([leaf, root], Policy(mode="require", anchors=anchors)))
    assert [f.code for f in decision.findings if f.severity == "error"] == ["chain_too_costly"]
    assert seconds < LIMIT_SECONDS, f"{seconds * 1000:.0f} ms"


def test_constraints_on_a_path_to_no_anchor_are_not_evaluated():
    root, key = constrained_root(350)
    leaf, _ = many_named_leaf(root, key, 400)
    seconds, decision = cpu_of(judged([leaf, root], Policy(mode="require")))
    assert {f.code for f in decision.findings if f.severity == "error"} == {"untrusted_root"}
    assert seconds < LIMIT_SECONDS, f"{seconds * 1000:.0f} ms"


def test_a_trusted_root_whose_constraints_would_cost_too_much_refuses_as_too_costly():
    root, key = constrained_root(350)
    leaf, _ = many_named_leaf(root, key, 400)
    seconds, decision = cpu_of(judged([leaf], Policy(mode="require", anchors=(root,))))
    assert [f.code for f in decision.findings if f.severity == "error"] == ["chain_too_costly"]
    assert "280,700 comparisons" in decision.findings[0].message
    assert seconds < LIMIT_SECONDS, f"{seconds * 1000:.0f} ms"


def test_a_trusted_root_with_constraints_a_real_ca_uses_is_judged_on_them():
    root, key = constrained_root(40)
    leaf, _ = many_named_leaf(root, key, 5)  # inside neither list: outside the permitted
    decision = evaluate(_read_chain((leaf.public_bytes(Encoding.DER),)).identity("tls", None),
                        Policy(mode="require", anchors=(root,)), NOW)
    violations = [f for f in decision.findings if f.code == "name_constraints_violated"]
    assert len(violations) == 3  # three shown, the others counted in the last
    assert "2 more of its names" in violations[-1].message
    assert "and 35 more" in violations[0].message  # 5 permitted subtrees listed of 40


# -- chains of every shape ------------------------------------------------------------------

NAME_KINDS = ("dns", "email", "uri", "ip", "dirname")


def _general_name(kind: str, index: int, domain: str) -> x509.GeneralName:
    match kind:
        case "dns":
            return x509.DNSName(f"n{index}.{domain}")
        case "email":
            return x509.RFC822Name(f"u{index}@{domain}")
        case "uri":
            return x509.UniformResourceIdentifier(f"https://n{index}.{domain}/p")
        case "ip":
            return x509.IPAddress(ipaddress.ip_address(0x0A000000 + index))
    return x509.DirectoryName(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                            f"n{index}")]))


def _subtree(kind: str, index: int, domain: str) -> x509.GeneralName:
    if kind == "ip":
        return x509.IPAddress(ipaddress.ip_network(f"10.{index % 250}.0.0/16"))
    if kind == "email":
        return x509.RFC822Name(f".{domain}" if index % 2 else domain)
    if kind == "uri":
        return x509.UniformResourceIdentifier(f"n{index}.{domain}")
    return _general_name(kind, index, domain)


def _subject(common_name: str, extra: int) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
                     + [x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, f"u{index}")
                        for index in range(extra)])


@st.composite
def shaped_chains(draw: st.DrawFn) -> tuple[list[x509.Certificate], Policy]:
    """A presented chain (leaf first) and the policy it is judged under: look-alike names,
    forged signatures, many subject attributes, names of every kind, name constraints of
    every kind at every level, trusted or not; at most MAX_JUDGED_BYTES in all."""
    levels = draw(st.integers(1, 8))
    budget = draw(st.integers(0, 1500))  # names, subtrees and attributes: about 25 bytes each
    shares = [draw(st.integers(0, 100)) for _ in range(levels * 3)]
    total = sum(shares) or 1
    counts = [budget * share // total for share in shares]
    same_names = draw(st.booleans())
    certificates: list[x509.Certificate] = []
    for level in reversed(range(levels)):
        names, subtrees, attributes = counts[level * 3:level * 3 + 3]
        kinds = draw(st.lists(st.sampled_from(NAME_KINDS), min_size=1, max_size=3))
        domain = draw(st.sampled_from(["example.com", "other.org"]))
        subject = _subject("Same" if same_names else f"Level {level}", attributes)
        issuer_level = min(level + 1, levels - 1)
        issuer = _subject("Same" if same_names else f"Level {issuer_level}", 0) \
            if issuer_level != level else subject
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
                   .public_key(KEYS[level % len(KEYS)].public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(NOW - dt.timedelta(days=1))
                   .not_valid_after(NOW + dt.timedelta(days=30)))
        if level > 0:
            builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None),
                                            critical=True)
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [_general_name(kinds[i % len(kinds)], i, domain) for i in range(names)]),
                critical=False)
        if subtrees and level > 0:
            half = [_subtree(kinds[i % len(kinds)], i, domain) for i in range(subtrees)]
            builder = builder.add_extension(x509.NameConstraints(
                half[::2] or None, half[1::2] or None), critical=True)
        signer = KEYS[draw(st.integers(0, len(KEYS) - 1))] if draw(st.booleans()) \
            else KEYS[issuer_level % len(KEYS)]
        certificates.insert(0, builder.sign(signer, hashes.SHA256()))
    presented = certificates[:draw(st.integers(1, levels))]
    while sum(len(c.public_bytes(Encoding.DER)) for c in presented) > MAX_JUDGED_BYTES:
        presented = presented[:-1] if len(presented) > 1 else presented
        if len(presented) == 1:
            break
    assume(sum(len(c.public_bytes(Encoding.DER)) for c in presented) <= MAX_JUDGED_BYTES)
    anchors = tuple(certificates[draw(st.integers(0, levels - 1)):][-1:]) \
        if draw(st.booleans()) else ()
    policy = Policy(mode="require", anchors=anchors, trust_intermediates=draw(st.booleans()),
                    verify_depth=8)
    return presented, policy


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=shaped_chains())
def test_no_chain_within_the_limits_costs_more_than_50_ms_to_judge(case):
    chain, policy = case
    seconds, _decision = cpu_of(judged(chain, policy))
    target(seconds)  # hypothesis searches towards the costliest shapes
    assert seconds < LIMIT_SECONDS, f"{seconds * 1000:.0f} ms"


def test_a_chain_larger_than_omgate_judges_is_refused_unread():
    """100 KiB of names of the kind that costs most to parse (directory names): refused as
    too costly without parsing them, and logged by digest."""
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DirectoryName(_subject(f"n{index}", 0)) for index in range(4800)]
    leaf = (x509.CertificateBuilder().subject_name(_subject("Large", 0))
            .issuer_name(_subject("Large", 0)).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - dt.timedelta(days=1))
            .not_valid_after(NOW + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .sign(key, hashes.SHA256()))
    assert len(leaf.public_bytes(Encoding.DER)) <= PRESENTABLE_BYTES
    seconds, decision = cpu_of(judged([leaf], Policy(mode="require", anchors=(leaf,))))
    assert [f.code for f in decision.findings] == ["chain_too_costly"]
    assert "bytes of certificates" in decision.findings[0].message
    assert seconds < LIMIT_SECONDS, f"{seconds * 1000:.0f} ms"
    presented = _read_chain((leaf.public_bytes(Encoding.DER),))
    assert presented.leaf_subject is None
    summary = chain_summary(presented.identity("tls", None), NOW)
    assert summary == [{"unread": "the chain is too large to be judged",
                        "sha256": fingerprint(leaf)}]
