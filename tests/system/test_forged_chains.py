"""Attacks on the verdict over real TLS: chains a client forged, and chains it cannot prove.

- Whoever holds any end-entity certificate under a trusted CA signs a new certificate
  named ``proxy.salesforce.com`` with that certificate's key and presents
  ``[forged, own certificate, CA]``: it must be refused in every setup.
- A client presents someone else's chain and fails CertificateVerify: that chain must
  never be logged or counted as accepted.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
from costly_chains import constrained_root, junk_cas, many_named_leaf
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID
from harness import PAYLOADS, SOAP_HEADERS, is_ack, ssl_context
from swapper import present_without_its_key

from service.tools.pki import Issued, issue, name, new_key

BODY = (PAYLOADS / "amplabs-create_account.xml").read_bytes()


def own_certificate(client_pki) -> Issued:
    """The attacker's ordinary client certificate, issued under the trusted CA."""
    case = client_pki.cases["valid"]
    certificate = x509.load_pem_x509_certificate(case.leaf.read_bytes())
    key = serialization.load_pem_private_key(case.key.read_bytes(), None)
    return Issued(certificate, key)  # type: ignore[arg-type]


def forged_files(client_pki, folder: Path) -> tuple[Path, Path]:
    own = own_certificate(client_pki)
    forged = issue(name("proxy.salesforce.com", "Salesforce-like test"), issuer=own,
                   key=new_key("rsa"), usages=(ExtendedKeyUsageOID.CLIENT_AUTH,))
    chain, key = folder / "forged-chain.pem", folder / "forged.key"
    chain.write_bytes(forged.pem() + own.pem() + client_pki.intermediate.pem())
    key.write_bytes(forged.key_pem())
    return chain, key


SETUPS = {
    "depth 3": {"verify_depth": 3},
    "trusted intermediate": {"trust_intermediates": True},
    "names and DN pinned to the forged ones": {
        "verify_depth": 3, "allowed_names": ["proxy.salesforce.com"],
        "subject_dn": "CN=proxy.salesforce.com,O=Salesforce-like test"},
    "refused in the handshake": {"verify_depth": 3, "reject_with": "handshake"},
}


@pytest.mark.parametrize("setup", SETUPS, ids=list(SETUPS))
def test_a_certificate_signed_with_a_client_key_is_refused(omgate_server, client_pki,
                                                          tmp_path, setup):
    rules = {"mode": "require", **SETUPS[setup]}
    if rules.get("trust_intermediates"):
        intermediate = tmp_path / "intermediate.pem"
        intermediate.write_bytes(client_pki.intermediate.pem())
        rules["trust"] = [str(client_pki.root_file), str(intermediate)]
    server = omgate_server({"client_auth": rules})
    chain, key = forged_files(client_pki, tmp_path)
    context = ssl_context(server.ca_path)
    context.load_cert_chain(chain, key)
    try:
        response = httpx.post(f"{server.url}/salesforce/outbound", content=BODY,
                              headers=SOAP_HEADERS, verify=context, timeout=20)
    except httpx.HTTPError:
        assert rules.get("reject_with") == "handshake"
    else:
        assert response.status_code == 403, response.text
    decision = server.wait_for("client_auth.decision")
    assert decision["outcome"] == "reject"
    errors = {(f["code"], f["cert"]) for f in decision["findings"] if f["severity"] == "error"}
    assert ("issuer_not_a_ca", 1) in errors, decision["findings"]
    assert not server.events("om.accepted")


# -- a chain whose holder cannot sign with its key ---------------------------------------


def test_a_chain_the_client_cannot_prove_is_never_an_acceptance(omgate_server, client_pki,
                                                               tmp_path):
    server = omgate_server({"client_auth": {"mode": "request"}})
    victim = [own_certificate(client_pki).certificate, client_pki.intermediate.certificate]
    attacker = issue(name("attacker.example", "Attacker"), key=new_key("rsa"),
                     usages=(ExtendedKeyUsageOID.CLIENT_AUTH,))
    chain, key = tmp_path / "attacker.pem", tmp_path / "attacker.key"
    chain.write_bytes(attacker.pem())
    key.write_bytes(attacker.key_pem())
    present_without_its_key(server, victim, chain, key)
    decision = server.wait_for("client_auth.decision")
    assert decision["chain"][0]["subject"] == victim[0].subject.rfc4514_string()
    assert decision["outcome"] == "unproven"
    assert decision["handshake"] == "failed"
    assert decision["findings"] == []  # the chain itself is sound: only unproven
    metrics = httpx.get(f"http://127.0.0.1:{server.extra['health_port']}/metrics").text
    assert 'omgate_client_auth_decisions_total{enforced="false",outcome="unproven",' \
           'source="tls"} 1.0' in metrics
    assert 'outcome="accept"' not in metrics
    # nothing accepted: the expiry has no value at all (an alert on it must not fire), not 0
    assert "# TYPE omgate_client_cert_expiry_timestamp_seconds gauge" in metrics
    assert "\nomgate_client_cert_expiry_timestamp_seconds{" not in metrics
    # a client that proves the same chain is accepted as before, and sets it
    assert is_ack(server.post(BODY, cert=client_pki.cases["valid"]))
    metrics = httpx.get(f"http://127.0.0.1:{server.extra['health_port']}/metrics").text
    assert '\nomgate_client_cert_expiry_timestamp_seconds{source="tls"} ' in metrics


def test_a_chain_built_to_cost_cpu_is_refused_before_any_check(omgate_server, client_pki,
                                                               tmp_path):
    server = omgate_server({"client_auth": {"mode": "require"}})
    own = own_certificate(client_pki)
    junk = junk_cas(19, own.certificate.issuer)
    chain, key = tmp_path / "costly.pem", tmp_path / "costly.key"
    chain.write_bytes(own.pem() + b"".join(
        certificate.public_bytes(serialization.Encoding.PEM) for certificate in junk))
    key.write_bytes(own.key_pem())
    context = ssl_context(server.ca_path)
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    context.load_cert_chain(chain, key)
    response = httpx.post(f"{server.url}/salesforce/outbound", content=BODY,
                          headers=SOAP_HEADERS, verify=context, timeout=20)
    assert response.status_code == 403
    decision = server.wait_for("client_auth.decision")
    assert {f["code"] for f in decision["findings"]} == {"unsupported_key"}
    assert is_ack(server.post(BODY, cert=client_pki.cases["valid"]))


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.parametrize("reject_with", ["handshake", "http"])
def test_a_chain_built_to_cost_name_constraint_checks_costs_a_handshake_no_more(
        omgate_server, tmp_path, reject_with):
    """A self-made root with 1,800 subtrees over a leaf with 1,800 names, a fresh serial
    each time so no decision is remembered: 7.4 s of CPU a handshake before; now about
    what the handshake itself costs. The connection is refused, the sender unharmed."""
    server = omgate_server({"client_auth": {"mode": "require", "reject_with": reject_with}})
    root, root_key = constrained_root(900)
    spent = []
    for attempt in range(3):
        leaf, key = many_named_leaf(root, root_key, 1800)
        chain, key_file = tmp_path / f"nc-{attempt}.pem", tmp_path / f"nc-{attempt}.key"
        chain.write_bytes(leaf.public_bytes(serialization.Encoding.PEM)
                          + root.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        context = ssl_context(server.ca_path)
        context.load_cert_chain(chain, key_file)
        before = cpu_seconds(server.process.pid)
        try:
            response = httpx.post(f"{server.url}/salesforce/outbound", content=BODY,
                                  headers=SOAP_HEADERS, verify=context, timeout=30)
            assert response.status_code == 403
        except httpx.HTTPError:
            assert reject_with == "handshake"
        decision = server.wait_for("client_auth.decision",
                                   lambda event: event.get("outcome") == "reject")
        spent.append(cpu_seconds(server.process.pid) - before)
    assert min(spent) < 0.25, f"server CPU per handshake: {spent}"
    assert decision["findings"]
