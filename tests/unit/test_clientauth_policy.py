"""The policy engine as a pure function: a table of chains and policies, exact findings."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from corpus import CASES, DAY, Case, Pki, build_pki
from costly_chains import junk_cas, look_alikes

from service.clientauth import (
    ClientIdentity,
    Policy,
    UnreadableCertificate,
    evaluate,
    fingerprint,
    parse_dn,
    parse_pin,
)
from service.clientauth import chain as chain_module
from service.clientauth.chain import MAX_SIGNATURE_CHECKS
from service.tools.pki import issue

NOW = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def pki() -> Pki:
    return build_pki(NOW)



def policy_for(pki: Pki, case: Case) -> Policy:
    base = Policy(mode="require", anchors=(pki.root.certificate,), verify_depth=2)
    return dataclasses.replace(base, **case.policy(pki))


@pytest.mark.parametrize("case", CASES, ids=[case.label for case in CASES])
def test_corpus(pki, case):
    chain = tuple(item.certificate for item in case.chain(pki))
    decision = evaluate(ClientIdentity(chain, "tls"), policy_for(pki, case), NOW)
    errors = {f.code for f in decision.findings if f.severity == "error"}
    warnings = {f.code for f in decision.findings if f.severity == "warning"}
    assert errors == case.errors, decision.findings
    assert warnings == case.warnings, decision.findings
    assert decision.outcome == ("reject" if case.errors else "accept")
    for finding in decision.findings:
        assert finding.message and finding.hint
    concerned = case.names(pki)
    if concerned is not None:
        subject = concerned.certificate.subject.rfc4514_string()
        assert any(subject in f.message for f in decision.findings), decision.findings


def test_no_certificate_per_mode():
    identity = ClientIdentity((), "tls")
    for mode, outcome, severity in (("require", "reject", "error"),
                                    ("request", "reject", "error"),
                                    ("optional", "accept", "info")):
        decision = evaluate(identity, Policy(mode=mode), NOW)
        assert decision.outcome == outcome
        assert [(f.code, f.severity) for f in decision.findings] == [("no_client_cert",
                                                                      severity)]
    assert evaluate(identity, Policy(mode="off"), NOW).findings == ()


def test_an_unreadable_certificate_alone_decides(pki):
    readable = (pki.intermediate.certificate,)
    policy = Policy(mode="require", anchors=(pki.root.certificate,))
    unreadable = UnreadableCertificate(0, b"\x30\x03\x01\x01\x01", "bad BOOLEAN")
    identity = ClientIdentity(readable, "tls", unreadable=(unreadable,))
    decision = evaluate(identity, policy, NOW)
    assert decision.outcome == "reject"
    assert [(f.code, f.cert) for f in decision.findings] == [("unreadable_certificate", 0)]
    assert "bad BOOLEAN" in decision.findings[0].message
    assert identity.chain_sha256 != ClientIdentity(readable, "tls").chain_sha256


def test_expiry_message_gives_date_and_days(pki):
    chain = (pki.extras["expired"].certificate, pki.intermediate.certificate)
    [finding] = evaluate(ClientIdentity(chain, "tls"),
                         Policy(mode="require", anchors=(pki.root.certificate,)), NOW).findings
    assert finding.cert == 0
    expired_on = pki.extras["expired"].certificate.not_valid_after_utc
    assert expired_on.strftime("%Y-%m-%d") in finding.message
    assert f"{(NOW - expired_on).days} days ago" in finding.message


def test_clock_skew_tolerates_a_certificate_a_minute_early(pki):
    early = issue(pki.leaf.certificate.subject, issuer=pki.intermediate,
                  not_before=NOW + dt.timedelta(minutes=1), not_after=NOW + 90 * DAY)
    chain = (early.certificate, pki.intermediate.certificate)
    policy = Policy(mode="require", anchors=(pki.root.certificate,))
    assert evaluate(ClientIdentity(chain, "tls"), policy, NOW).accepted
    strict = dataclasses.replace(policy, clock_skew=dt.timedelta(0))
    assert not evaluate(ClientIdentity(chain, "tls"), strict, NOW).accepted


def test_pin_mismatch_hint_names_the_new_fingerprint(pki):
    chain = (pki.leaf.certificate, pki.intermediate.certificate)
    policy = Policy(mode="require", anchors=(pki.root.certificate,),
                    pins=(parse_pin("sha256:" + "ab" * 32),))
    [finding] = evaluate(ClientIdentity(chain, "tls"), policy, NOW).findings
    assert f"sha256:{fingerprint(pki.leaf.certificate)}" in finding.hint
    assert "pins" in finding.hint


def test_missing_intermediate_hint_names_the_missing_dn(pki):
    [finding] = evaluate(ClientIdentity((pki.leaf.certificate,), "tls"),
                         Policy(mode="require", anchors=(pki.root.certificate,)), NOW).findings
    issuer = pki.intermediate.certificate.subject.rfc4514_string()
    assert issuer in finding.message
    assert issuer in finding.hint
    assert "client_auth.trust" in finding.hint


def test_a_trusted_intermediate_completes_a_leaf_only_chain(pki):
    policy = Policy(mode="require", anchors=(pki.root.certificate,),
                    known_cas=(pki.intermediate.certificate,))
    assert evaluate(ClientIdentity((pki.leaf.certificate,), "tls"), policy, NOW).accepted
    without_root = Policy(mode="require", known_cas=(pki.intermediate.certificate,))
    decision = evaluate(ClientIdentity((pki.leaf.certificate,), "tls"), without_root, NOW)
    assert {f.code for f in decision.findings} == {"untrusted_root"}
    as_anchor = Policy(mode="require", anchors=(pki.intermediate.certificate,),
                       trust_intermediates=True, verify_depth=1)
    assert evaluate(ClientIdentity((pki.leaf.certificate,), "tls"), as_anchor, NOW).accepted


def test_dn_order_mistake_gets_a_specific_hint(pki):
    reversed_rfc4514 = parse_dn(
        r"C=US,O=Example\, Inc.,OU=www.example.com/CPS,CN=Corpus Intermediate CA")
    policy = Policy(mode="require", anchors=(pki.root.certificate,), issuer_dn=reversed_rfc4514)
    chain = (pki.leaf.certificate, pki.intermediate.certificate)
    [finding] = evaluate(ClientIdentity(chain, "tls"), policy, NOW).findings
    assert finding.code == "issuer_dn_mismatch"
    assert "opposite order" in finding.hint


# -- hints never tell an operator to trust or pin what did not verify ----------------------


def _hints(decision) -> str:
    return " ".join(finding.hint for finding in decision.findings)


def test_an_unknown_issuer_of_a_lone_leaf_is_either_a_gap_or_an_untrusted_ca(pki):
    lone = pki.extras["untrusted"].certificate  # issued by a CA nobody here trusts
    decision = evaluate(ClientIdentity((lone,), "tls"),
                        Policy(mode="require", anchors=(pki.root.certificate,)), NOW)
    [finding] = decision.findings
    assert finding.code == "missing_intermediate"
    assert "either the sender left out its intermediate, or its CA is not one you trust" \
        in finding.message
    assert "published chain" in finding.hint and "fingerprint" in finding.hint
    assert not finding.hint.startswith("Add")


@pytest.mark.parametrize("label", ["expired", "untrusted", "self_signed", "forged"])
def test_no_pin_is_suggested_for_a_certificate_with_an_error(pki, label):
    leaf = pki.extras[label]
    chain = (leaf.certificate,) if label == "self_signed" else (
        leaf.certificate, (pki.other_intermediate if label == "untrusted"
                           else pki.intermediate).certificate)
    policy = Policy(mode="require", anchors=(pki.root.certificate,),
                    pins=(parse_pin("sha256:" + "ab" * 32),),
                    subject_dn=parse_dn("CN=someone.else"))
    decision = evaluate(ClientIdentity(chain, "tls"), policy, NOW)
    assert not decision.accepted
    fingerprint_text = fingerprint(leaf.certificate)
    assert fingerprint_text not in _hints(decision)
    assert "subject_dn = " not in _hints(decision)


def test_pins_alone_never_suggest_the_pin_of_what_they_refused(pki):
    stranger = pki.extras["self_signed"].certificate
    policy = Policy(mode="require", pins=(parse_pin("sha256:" + "ab" * 32),))
    [finding] = evaluate(ClientIdentity((stranger,), "tls"), policy, NOW).findings
    assert finding.code == "pin_mismatch"
    assert fingerprint(stranger) not in finding.hint
    assert "out of band" in finding.hint


# -- a chain cannot make omgate work without bound ----------------------------------------


def test_huge_keys_are_refused_before_any_signature_check(pki, monkeypatch):
    checks = []
    monkeypatch.setattr(chain_module, "signature_ok",
                        lambda *args: checks.append(args) or True)
    junk = junk_cas(19, pki.leaf.certificate.issuer)
    decision = evaluate(ClientIdentity((pki.leaf.certificate, *junk), "tls"),
                        Policy(mode="require", anchors=(pki.root.certificate,)), NOW)
    assert {(f.code, f.cert) for f in decision.findings} == {
        ("unsupported_key", index) for index in range(1, 20)}
    assert "16384-bit RSA key" in decision.findings[0].message
    assert checks == []


def test_look_alike_names_cost_a_bounded_number_of_signature_checks(pki, monkeypatch):
    real = chain_module.signature_ok
    checks = []

    def counting(child, parent):
        checks.append((child, parent))
        return real(child, parent)

    monkeypatch.setattr(chain_module, "signature_ok", counting)
    crowd = look_alikes(20)
    decision = evaluate(ClientIdentity(tuple(crowd), "tls"),
                        Policy(mode="require", anchors=(pki.root.certificate,)), NOW)
    assert not decision.accepted
    assert len(checks) <= MAX_SIGNATURE_CHECKS
