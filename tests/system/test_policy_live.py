"""The policy engine behind a live server: the corpus, endpoint overrides, metrics, inspect."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import ssl

import httpx
import pytest
from corpus import CASES, build_pki, with_lax_boolean
from cryptography import x509
from harness import PAYLOADS, SOAP_HEADERS, is_ack, run_omgate, ssl_context

from service.clientauth import fingerprint

BODY = (PAYLOADS / "amplabs-create_account.xml").read_bytes()
# Cases a TLS client can present as they are: its own certificate first, default rules.
# (A leaf with a made-up public key has no private key to present it with.)
LIVE = [case for case in CASES
        if case.label not in ("chain in reverse order", "same chain at depth + 1",
                              "an RSA exponent that would make checks slow",
                              # OpenSSL follows the first copy it is sent, finds no issuer,
                              # and the listener refuses with it (never looser)
                              "alternate path: the copy sent first leads nowhere, the one "
                              "sent second does")
        and case.policy(build_pki(dt.datetime.now(dt.UTC))) == {}]


@pytest.fixture(scope="module")
def live_pki(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    pki = build_pki(dt.datetime.now(dt.UTC))
    (folder / "root.pem").write_bytes(pki.root.pem())
    files = {}
    for index, case in enumerate(LIVE):
        chain = case.chain(pki)
        (folder / f"{index}.pem").write_bytes(b"".join(item.pem() for item in chain))
        (folder / f"{index}.key").write_bytes(chain[0].key_pem())
        files[case.label] = (folder / f"{index}.pem", folder / f"{index}.key")
    return pki, folder, files


@pytest.fixture(scope="module")
def corpus_servers(dev_pki, client_pki, server_log_dir, tmp_path_factory, live_pki):
    from conftest import Launcher

    _pki, folder, _files = live_pki
    servers, launchers = {}, []
    for mode in ("request", "require"):
        launcher = Launcher(dev_pki, folder / "root.pem", server_log_dir,
                            tmp_path_factory.mktemp(f"corpus-{mode}"), f"corpus-{mode}")
        launchers.append(launcher)
        servers[mode] = launcher({"client_auth": {"mode": mode}})
    yield servers
    for launcher in launchers:
        launcher.kill_all()


def post_with(server, chain, key) -> httpx.Response:
    context = ssl_context(server.ca_path)
    context.set_ciphers("DEFAULT:@SECLEVEL=0")  # lets the client load a SHA-1 chain
    context.load_cert_chain(chain, key)
    return httpx.post(f"{server.url}/salesforce/outbound", content=BODY, headers=SOAP_HEADERS,
                      verify=context, timeout=20)


@pytest.mark.parametrize("mode", ["request", "require"])
def test_a_leaf_only_openssl_can_read_stays_in_the_chain(corpus_servers, live_pki, tmp_path,
                                                         mode):
    """OpenSSL verifies this leaf, cryptography cannot parse it: dropped, the intermediate
    behind it would be judged as the client's certificate. It is reported and refused."""
    pki, _folder, _files = live_pki
    lax = with_lax_boolean(pki.leaf, pki.intermediate)
    chain, key = tmp_path / "lax.pem", tmp_path / "lax.key"
    chain.write_bytes(ssl.DER_cert_to_PEM_cert(lax).encode() + pki.intermediate.pem())
    key.write_bytes(pki.leaf.key_pem())
    server = corpus_servers[mode]
    response = post_with(server, chain, key)
    if mode == "request":
        assert is_ack(response), response.text
    else:
        assert response.status_code == 403
    decision = server.decision_for(server.peer_of(response.headers["x-correlation-id"]))
    assert decision["outcome"] == "reject"
    assert [(f["code"], f["cert"]) for f in decision["findings"]] == [
        ("unreadable_certificate", 0)]
    unreadable, intermediate = decision["chain"]
    assert unreadable["sha256"] == hashlib.sha256(lax).hexdigest()
    assert "Extension::critical" in unreadable["unreadable"]
    assert intermediate["sha256"] == fingerprint(pki.intermediate.certificate)


def test_certificates_beyond_twenty_are_not_dropped_silently(corpus_servers, live_pki,
                                                            tmp_path):
    pki, _folder, _files = live_pki
    chain, key = tmp_path / "long.pem", tmp_path / "long.key"
    chain.write_bytes(pki.leaf.pem() + pki.intermediate.pem() + pki.root.pem() * 21)
    key.write_bytes(pki.leaf.key_pem())
    server = corpus_servers["require"]
    response = post_with(server, chain, key)
    assert response.status_code == 403
    decision = server.decision_for(server.peer_of(response.headers["x-correlation-id"]))
    errors = [(f["code"], f["cert"]) for f in decision["findings"] if f["severity"] == "error"]
    assert errors == [("unreadable_certificate", 20)]
    assert "first 20" in decision["findings"][0]["message"]


@pytest.mark.parametrize("mode", ["request", "require"])
@pytest.mark.parametrize("case", LIVE, ids=[case.label for case in LIVE])
def test_corpus_through_a_live_server(corpus_servers, live_pki, mode, case):
    server = corpus_servers[mode]
    _pki, _folder, files = live_pki
    response = post_with(server, *files[case.label])
    if mode == "request" or not case.errors:
        assert is_ack(response), response.text
    else:
        assert response.status_code == 403
    peer = server.peer_of(response.headers["x-correlation-id"])
    decision = server.decision_for(peer)
    errors = {f["code"] for f in decision["findings"] if f["severity"] == "error"}
    warnings = {f["code"] for f in decision["findings"] if f["severity"] == "warning"}
    assert errors == case.errors
    assert warnings == case.warnings
    assert decision["outcome"] == ("reject" if case.errors else "accept")


def test_endpoint_overrides_apply_per_path_on_one_connection(omgate_server, client_pki):
    server = omgate_server({
        "client_auth": {"mode": "require"},
        "endpoints": [
            {"path": "/open"},
            {"path": "/strict", "client_auth": {"subject_dn": "CN=someone.else"}},
            {"path": "/pinned", "client_auth": {"pins": [
                "sha256:" + fingerprint(x509.load_pem_x509_certificate(
                    client_pki.cases["valid"].leaf.read_bytes()))]}},
        ],
    })
    with server.client(client_pki.cases["valid"]) as client:
        assert is_ack(client.post("/open", content=BODY, headers=SOAP_HEADERS))
        strict = client.post("/strict", content=BODY, headers=SOAP_HEADERS)
        assert strict.status_code == 403
        assert is_ack(client.post("/pinned", content=BODY, headers=SOAP_HEADERS))
        assert client.post("/strict", content=BODY, headers=SOAP_HEADERS).status_code == 403
    endpoint_decisions = [e for e in server.events("client_auth.decision") if "endpoint" in e]
    assert {e["endpoint"] for e in endpoint_decisions} == {"/pinned", "/strict"}
    # once per connection and endpoint (a refusal closes the connection: unread body)
    keys = [(e["peer"], e["endpoint"]) for e in endpoint_decisions]
    assert len(keys) == len(set(keys))
    for decision in endpoint_decisions:
        codes = [f["code"] for f in decision["findings"]]
        assert codes == (["subject_dn_mismatch"] if decision["endpoint"] == "/strict" else [])


def test_metrics_on_the_health_listener(omgate_server, client_pki):
    server = omgate_server({"client_auth": {"mode": "request"}})
    assert is_ack(server.post(BODY, cert=client_pki.cases["valid"]))
    assert is_ack(server.post(BODY, cert=client_pki.cases["expired"]))
    assert server.post(b"<broken", cert=client_pki.cases["valid"]).status_code == 400
    with pytest.raises(httpx.ConnectError, match="HANDSHAKE_FAILURE"):
        old = ssl_context(server.ca_path)
        old.maximum_version = ssl.TLSVersion.TLSv1_2
        old.set_ciphers("AES128-SHA")
        httpx.get(f"{server.url}/healthz", verify=old)
    health = server.extra["health_port"]
    text = httpx.get(f"http://127.0.0.1:{health}/metrics").text
    assert 'omgate_client_auth_decisions_total{enforced="false",outcome="accept",source="tls"}' \
        in text
    assert 'omgate_client_auth_findings_total{code="expired",severity="error"}' in text
    assert 'omgate_tls_handshake_failures_total{reason="no_shared_cipher"} 1.0' in text
    assert 'omgate_messages_total{reason="",result="accepted"} 2.0' in text
    assert 'omgate_messages_total{reason="malformed_xml",result="rejected"} 1.0' in text
    assert 'omgate_notifications_total{kind="duplicate"} 1.0' in text
    assert 'omgate_client_cert_expiry_timestamp_seconds{source="tls"}' in text
    assert 'omgate_request_duration_seconds_count{endpoint="/salesforce/outbound"} 3.0' in text
    assert httpx.get(f"{server.url}/metrics", verify=ssl_context(server.ca_path)).status_code \
        == 404  # never on the public listener


def test_handshake_mode_refuses_on_policy_with_the_alert_and_one_log_line(omgate_server,
                                                                         client_pki):
    server = omgate_server({"client_auth": {"mode": "require", "reject_with": "handshake",
                                            "pins": ["sha256:" + "ab" * 32]}})
    context = ssl_context(server.ca_path)
    context.load_cert_chain(client_pki.cases["valid"].chain, client_pki.cases["valid"].key)
    with pytest.raises(httpx.HTTPError, match=r"BAD_CERTIFICATE|bad certificate"):
        httpx.post(f"{server.url}/salesforce/outbound", content=BODY, headers=SOAP_HEADERS,
                   verify=context)
    server.wait_for("tls.handshake_failed")
    server.wait_for("client_auth.decision")  # written once the handshake has ended
    decisions = server.events("client_auth.decision")
    assert len(decisions) == 1
    assert decisions[0]["outcome"] == "reject" and decisions[0]["handshake"] == "refused"
    assert [f["code"] for f in decisions[0]["findings"]] == ["pin_mismatch"]
    assert decisions[0]["tls"]["tls_version"] == "TLSv1.3"


def test_inspect_cli(client_pki, tmp_path):
    config = tmp_path / "omgate.toml"
    config.write_text(f'[client_auth]\ntrust = ["{client_pki.root_file}"]\n'
                      '[[endpoints]]\npath = "/a"\n'
                      '[[endpoints]]\npath = "/strict"\n[endpoints.client_auth]\n'
                      'subject_dn = "CN=nobody"\n')
    valid = client_pki.cases["valid"]
    result = run_omgate("inspect", str(valid.chain), "--config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "certificate 0: CN=valid.client.test" in result.stdout
    assert "accepted under this policy" in result.stdout
    leaf_only = run_omgate("inspect", str(valid.leaf), "--config", str(config), "--json")
    assert leaf_only.returncode == 1
    document = json.loads(leaf_only.stdout)
    assert [f["code"] for f in document["findings"]] == ["missing_intermediate"]
    assert set(document["findings"][0]) == {"code", "severity", "cert", "message", "hint"}
    assert document["chain"][0]["subject"] == "CN=valid.client.test,O=Salesforce-like test"
    strict = run_omgate("inspect", str(valid.chain), "--config", str(config),
                        "--endpoint", "/strict", "--json")
    assert strict.returncode == 1
    assert json.loads(strict.stdout)["findings"][0]["code"] == "subject_dn_mismatch"
    other = run_omgate("inspect", str(valid.chain), "--config", str(config),
                       "--trust", str(client_pki.other_root_file), "--json")
    assert json.loads(other.stdout)["findings"][0]["code"] == "untrusted_root"
    missing = run_omgate("inspect", str(tmp_path / "nope.pem"), "--config", str(config))
    assert missing.returncode == 2
    assert "nope.pem" in missing.stderr
