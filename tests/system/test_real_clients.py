"""curl and a JSSE (Java) client against a real `omgate serve`."""

from __future__ import annotations

import subprocess

import pytest
from clients import java_error, java_keystore, send
from harness import PAYLOADS, require_executable

PAYLOAD = PAYLOADS / "amplabs-create_account.xml"


def curl(server, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_executable("curl"), "--silent", "--show-error", "--cacert",
         str(server.ca_path), "-H", "Content-Type: text/xml; charset=utf-8",
         "-H", 'SOAPAction: ""', "--data-binary", f"@{PAYLOAD}", "--write-out",
         "\nHTTP %{http_code}", *args, f"{server.url}/salesforce/outbound"],
        capture_output=True, text=True, timeout=60, check=False)


def test_curl_with_and_without_a_client_certificate_in_require_mode(omgate_server, client_pki):
    server = omgate_server({"client_auth": {"mode": "require"}})
    case = client_pki.cases["valid"]
    with_cert = curl(server, "--cert", str(case.chain), "--key", str(case.key))
    assert "<Ack>true</Ack>" in with_cert.stdout, with_cert.stderr
    assert with_cert.stdout.endswith("HTTP 200")
    without = curl(server)
    assert without.stdout.endswith("HTTP 403")
    assert "Client certificate not accepted." in without.stdout
    expired = client_pki.cases["expired"]
    refused = curl(server, "--cert", str(expired.chain), "--key", str(expired.key))
    assert refused.stdout.endswith("HTTP 403")
    decision = server.wait_for("client_auth.decision",
                               lambda e: any(f["code"] == "expired" for f in e["findings"]))
    assert decision["chain"][0]["subject"].startswith("CN=expired.client.test")


@pytest.mark.parametrize(("advertise", "sends_certificate"), [
    ("unrelated", False), ("none", True), ("anchors", True)])
def test_java_sends_its_certificate_only_when_the_ca_names_match(
        omgate_server, client_pki, tmp_path, advertise, sends_certificate):
    setting = str(client_pki.other_root_file) if advertise == "unrelated" else advertise
    server = omgate_server({"client_auth": {"mode": "request", "advertise_ca_names": setting}})
    answer = send("java", server, client_pki.cases["valid"], tmp_path)
    assert answer.status == 200
    assert "<Ack>true</Ack>" in answer.body  # request mode never refuses
    decision = server.wait_for("client_auth.decision")
    if sends_certificate:
        assert decision["outcome"] == "accept"
        assert decision["chain"][0]["subject"] == "CN=valid.client.test,O=Salesforce-like test"
    else:
        [finding] = decision["findings"]
        assert finding["code"] == "no_client_cert"
        assert "CN=Unrelated root CA,O=omgate development" in finding["message"]
        assert "Java" in finding["message"]
        assert "advertise_ca_names" in finding["hint"]
        assert decision["tls"]["advertised_ca_names"] == [
            "CN=Unrelated root CA,O=omgate development"]


@pytest.mark.parametrize(("case", "alert"), [("expired", "certificate_expired"),
                                             ("untrusted", "unknown_ca"),
                                             ("none", "certificate_required")])
def test_java_names_the_alert_of_a_refused_handshake(omgate_server, client_pki, tmp_path,
                                                     case, alert):
    """A JSSE client (Salesforce's sender is one) must see the alert, not a broken pipe:
    omgate reads what the client still sends after the alert before it closes."""
    server = omgate_server({"client_auth": {"mode": "require", "reject_with": "handshake"}})
    keystore = None if case == "none" else java_keystore(client_pki.cases[case], tmp_path)
    error = java_error(tmp_path, f"{server.url}/salesforce/outbound", server.ca_path, keystore)
    assert f"Received fatal alert: {alert}" in error, error
