"""Real public chains (x509-limbo) and a 1996 VeriSign root through the policy engine."""

from __future__ import annotations

import datetime as dt
import json
import warnings

import pytest
from cryptography import x509
from harness import FIXTURES

from service.clientauth import ClientIdentity, Policy, evaluate, summarize
from service.clientauth.extensions import CLIENT_USAGES, extended_key_usages
from service.tools.pki import Issued, issue, new_key

CHAINS = sorted((FIXTURES / "chains").glob("*.limbo.json"))
VERISIGN = FIXTURES / "certs" / "verisign-class3-pca-seed.pem"


def load(path):
    case = json.loads(path.read_text())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one real certificate has a non-positive serial
        peer = x509.load_pem_x509_certificate(case["peer_certificate"].encode())
        intermediates = [x509.load_pem_x509_certificate(p.encode())
                         for p in case["untrusted_intermediates"]]
        roots = [x509.load_pem_x509_certificate(p.encode()) for p in case["trusted_certs"]]
    when = dt.datetime.fromisoformat(case["validation_time"])
    return peer, intermediates, roots, when


def verdict(chain, roots, when, **policy):
    return evaluate(ClientIdentity(tuple(chain), "tls"),
                    Policy(mode="require", anchors=tuple(roots), **policy), when)


def codes(decision, severity):
    return {finding.code for finding in decision.findings if finding.severity == severity}


def server_only_cas(intermediates):
    """Indexes (as presented, after the leaf) of CAs whose usage excludes clientAuth."""
    return {index for index, certificate in enumerate(intermediates, start=1)
            if (usages := extended_key_usages(certificate)) is not None
            and not CLIENT_USAGES & set(usages)}


@pytest.mark.parametrize("path", CHAINS, ids=lambda path: path.name.split(".limbo")[0])
def test_real_chain_analyses_without_errors(path):
    """Real server chains judged as client chains: sound, except that a CA restricted to
    serverAuth may not issue client certificates (OpenSSL and browsers agree)."""
    peer, intermediates, roots, when = load(path)
    decision = verdict([peer, *intermediates], roots, when, verify_depth=len(intermediates) + 1)
    restricted = server_only_cas(intermediates)
    errors = [f for f in decision.findings if f.severity == "error"]
    assert {(f.code, f.cert) for f in errors} == {("missing_client_auth_eku", index)
                                                  for index in restricted}, decision.findings
    assert decision.accepted == (not restricted)
    for certificate in [peer, *intermediates, *roots]:
        assert summarize(certificate, when)["sha256"]


@pytest.mark.parametrize("path", CHAINS, ids=lambda path: path.name.split(".limbo")[0])
def test_real_chain_reversed_is_out_of_order(path):
    peer, intermediates, roots, when = load(path)
    decision = verdict([*reversed(intermediates), peer], roots, when,
                       verify_depth=len(intermediates) + 1)
    expected = {"chain_out_of_order"} | ({"missing_client_auth_eku"}
                                         if server_only_cas(intermediates) else set())
    assert codes(decision, "error") == expected, decision.findings
    [finding] = [f for f in decision.findings if f.code == "chain_out_of_order"]
    assert peer.subject.rfc4514_string() in finding.message


@pytest.mark.parametrize("path", CHAINS, ids=lambda path: path.name.split(".limbo")[0])
def test_real_chain_without_its_intermediate_misses_it(path):
    peer, intermediates, roots, when = load(path)
    decision = verdict([peer, *intermediates[1:]], roots, when,
                       verify_depth=len(intermediates) + 1)
    assert codes(decision, "error") == {"missing_intermediate"}, decision.findings
    [finding] = [f for f in decision.findings if f.code == "missing_intermediate"]
    assert intermediates[0].subject.rfc4514_string() in finding.message
    # what remains above the missing link is reported as unused; these are server
    # certificates, so some lack the clientAuth usage a client certificate would carry
    assert codes(decision, "warning") <= {"unrelated_certificate", "expires_soon",
                                          "missing_client_auth_eku"}


def test_depth_counts_ca_certificates_above_the_leaf_like_apache():
    bing = FIXTURES / "chains" / "bing.com.limbo.json"
    peer, intermediates, roots, when = load(bing)  # leaf, CA, cross-signed root, anchor
    tight = verdict([peer, *intermediates], roots, when, verify_depth=2)
    assert "depth_exceeded" in codes(tight, "error")
    assert "depth_exceeded" not in codes(verdict([peer, *intermediates], roots, when,
                                                 verify_depth=3), "error")


def verisign_root() -> x509.Certificate:
    return x509.load_pem_x509_certificate(VERISIGN.read_bytes())


def test_verisign_md2_v1_root_loads_as_an_anchor_and_summarises():
    root = verisign_root()
    assert root.version == x509.Version.v1
    summary = summarize(root, dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
    assert summary["signature_algorithm"] in ("md2WithRSAEncryption", "1.2.840.113549.1.1.2")
    assert summary["key"] == "RSA 1024"
    assert summary["is_ca"] is False  # a v1 certificate has no basicConstraints
    assert summary["subject"] == summary["issuer"]


def test_a_chain_ending_in_the_verisign_root_is_reported_honestly():
    root = verisign_root()
    when = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    # A leaf that names the VeriSign root as its issuer; nobody here has that key.
    impostor = issue(root.subject, key=new_key("rsa"))
    leaf = issue(x509.Name.from_rfc4514_string("CN=client.example.com"),
                 issuer=Issued(root, impostor.key), not_before=when - dt.timedelta(days=1),
                 not_after=when + dt.timedelta(days=300))
    decision = verdict([leaf.certificate], [root], when)
    assert codes(decision, "error") == {"bad_signature"}
    [finding] = decision.findings
    assert "Class 3 Public Primary Certification Authority" in finding.message
    presented_root = verdict([root], [root], when)
    assert not codes(presented_root, "error")  # the anchor itself: trusted, and said so
    as_chain_member = verdict([leaf.certificate, root], [root], when)
    assert codes(as_chain_member, "error") == {"bad_signature"}
