"""``omgate inspect`` says what ``omgate serve`` will do with a chain, for the same reason.

The listener has three opinions (omgate's rules, cryptography's verifier, OpenSSL's verify
callback); inspect once had two, so it accepted chains serve refused: a leaf whose
Authority Key Identifier names another key than its issuer's (OpenSSL then reports the
intermediate missing although it was sent), and a CA whose only extended key usage is
anyExtendedKeyUsage. Each case here is presented to a real server and inspected from its
file under the server's own configuration: same outcome, same codes, and the code names
the cause.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID
from harness import PAYLOADS, SOAP_HEADERS, run_omgate, ssl_context

from service.clientauth import chain_fingerprint
from service.tools.pki import Issued, issue, name, new_key

BODY = (PAYLOADS / "amplabs-create_account.xml").read_bytes()
ANY = ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE
CLIENT = ExtendedKeyUsageOID.CLIENT_AUTH


def _with_foreign_key_identifier(issuer: Issued) -> Issued:
    """A client certificate ``issuer`` signed, whose AKI names another key."""
    key = new_key("ec")
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name("aki.client.test"))
        .issuer_name(issuer.certificate.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=90))
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            new_key("ec").public_key()), critical=False)
        .add_extension(x509.ExtendedKeyUsage([CLIENT]), critical=False)
        .sign(issuer.key, hashes.SHA256()))
    return Issued(certificate, key)


def _chains(client_pki) -> dict[str, list[Issued]]:
    intermediate = client_pki.intermediate
    any_ca = issue(name("Any-usage intermediate CA"), issuer=client_pki.root, ca=True,
                   usages=(ANY,))
    return {
        "valid": [issue(name("ok.client.test"), issuer=intermediate, usages=(CLIENT,)),
                  intermediate],
        "key identifier mismatch": [_with_foreign_key_identifier(intermediate), intermediate],
        "CA with only anyExtendedKeyUsage": [
            issue(name("under-any.client.test"), issuer=any_ca, usages=(CLIENT,)), any_ca],
        "leaf with only anyExtendedKeyUsage": [
            issue(name("any.client.test"), issuer=intermediate, usages=(ANY,)), intermediate],
        "leaf with only serverAuth": [
            issue(name("server.client.test"), issuer=intermediate,
                  usages=(ExtendedKeyUsageOID.SERVER_AUTH,)), intermediate],
    }


EXPECTED_ERRORS = {
    "valid": set(),
    "key identifier mismatch": {"key_identifier_mismatch"},
    "CA with only anyExtendedKeyUsage": {"missing_client_auth_eku"},
    "leaf with only anyExtendedKeyUsage": set(),  # a warning, as for any leaf without clientAuth
    "leaf with only serverAuth": set(),
}


@pytest.mark.parametrize("case", list(EXPECTED_ERRORS))
def test_inspect_and_serve_reach_the_same_verdict_for_the_same_reason(
        omgate_server, client_pki, tmp_path: Path, case):
    server = omgate_server({"client_auth": {"mode": "require"}})
    chain = _chains(client_pki)[case]
    chain_file, key_file = tmp_path / "chain.pem", tmp_path / "client.key"
    chain_file.write_bytes(b"".join(item.pem() for item in chain))
    key_file.write_bytes(chain[0].key_pem())
    context = ssl_context(server.ca_path)
    context.load_cert_chain(chain_file, key_file)
    response = httpx.post(f"{server.url}/salesforce/outbound", content=BODY,
                          headers=SOAP_HEADERS, verify=context, timeout=20)
    sha256 = chain_fingerprint(tuple(item.certificate for item in chain))
    served = server.wait_for("client_auth.decision",
                             lambda event: event.get("chain_sha256") == sha256)
    inspected = run_omgate("inspect", str(chain_file), "--config", str(server.config_path),
                           "--json")
    assert inspected.returncode in (0, 1), inspected.stderr
    document = json.loads(inspected.stdout)

    def errors(findings: list[dict]) -> set[str]:
        return {f["code"] for f in findings if f["severity"] == "error"}

    assert errors(served["findings"]) == errors(document["findings"]) == EXPECTED_ERRORS[case]
    assert served["outcome"] == document["outcome"]
    assert response.status_code == (200 if served["outcome"] == "accept" else 403)
    if "anyExtendedKeyUsage" in case:
        named = [f["message"] for f in document["findings"]
                 if f["code"] == "missing_client_auth_eku"]
        assert named and all("anyExtendedKeyUsage" in message for message in named)
