"""Every client-auth mode against real TLS clients presenting every kind of chain."""

from __future__ import annotations

import pytest
from clients import CLIENTS, send
from cryptography import x509

from service.clientauth import chain_fingerprint

MODES = ("off", "request", "optional", "require")
CASES = ("none", "valid", "untrusted", "expired", "leaf_only")
# What each mode answers (ack or 403) for each case; DESIGN.md's mode table.
EXPECTED = {
    "off": dict.fromkeys(CASES, "ack"),
    "request": dict.fromkeys(CASES, "ack"),
    "optional": {"none": "ack", "valid": "ack", "untrusted": 403, "expired": 403,
                 "leaf_only": 403},
    "require": {"none": 403, "valid": "ack", "untrusted": 403, "expired": 403,
                "leaf_only": 403},
}
FINDING = {"untrusted": "untrusted_root", "expired": "expired", "leaf_only": "missing_intermediate",
           "none": "no_client_cert"}

@pytest.fixture(scope="module")
def client_files(tmp_path_factory):
    return tmp_path_factory.mktemp("client-files")


@pytest.fixture(scope="module")
def servers(dev_pki, client_pki, server_log_dir, tmp_path_factory):
    from conftest import Launcher

    started = {}
    launchers = []
    for mode in MODES:
        folder = tmp_path_factory.mktemp(f"mode-{mode}")
        launcher = Launcher(dev_pki, client_pki.root_file, server_log_dir, folder, f"mode-{mode}")
        launchers.append(launcher)
        started[mode] = launcher({"client_auth": {"mode": mode}})
    yield started
    for launcher in launchers:
        launcher.kill_all()


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("client", CLIENTS)
def test_mode_answers_each_chain_and_logs_it(servers, client_pki, client_files, client, mode,
                                             case):
    server = servers[mode]
    cert = None if case == "none" else client_pki.cases[case]
    answer = send(client, server, cert, client_files)
    expected = EXPECTED[mode][case]
    correlation = answer.correlation_id
    if expected == "ack":
        assert answer.status == 200, answer.body
        assert "<Ack>true</Ack>" in answer.body
    else:
        assert answer.status == expected
        assert "<faultcode>soapenv:Client</faultcode>" in answer.body
        # Only this sentence goes back; the reasons are in the log.
        assert "<faultstring>Client certificate not accepted. (correlation id" in answer.body
        rejected = server.wait_for("om.rejected", lambda e: e["correlation_id"] == correlation)
        assert rejected["reason"] == "client_cert_rejected"
    if mode == "off":
        assert not server.events("client_auth.decision")
        return
    decision = server.decision_for(server.peer_of(correlation))
    assert decision["mode"] == mode
    assert decision["source"] == "tls"
    assert decision["enforced"] is (mode in ("optional", "require"))
    codes = {finding["code"] for finding in decision["findings"]}
    if case == "valid":
        assert decision["outcome"] == "accept"
        assert not codes
    elif case == "none":
        assert codes == {"no_client_cert"}
        assert decision["outcome"] == ("accept" if mode == "optional" else "reject")
    else:
        assert decision["outcome"] == "reject"
        assert codes == {FINDING[case]}
    # on every line: the policy refused, and only the mode let the message through
    assert decision["would_reject"] is (mode == "request" and decision["outcome"] == "reject")
    if cert is not None:
        sent = x509.load_pem_x509_certificates(cert.chain.read_bytes())
        assert decision["chain_sha256"] == chain_fingerprint(tuple(sent))
        # the chain in full the first time this server logs it, its fingerprint alone after
        decisions = server.events("client_auth.decision")
        earlier = decisions[:decisions.index(decision)]
        if any(e["chain_sha256"] == decision["chain_sha256"] for e in earlier):
            assert "chain" not in decision
        else:
            assert [c["subject"] for c in decision["chain"]] == [
                c.subject.rfc4514_string() for c in sent]
