"""What every log line about one request says the same way: its correlation id, and the
client's address (an IPv6 one in brackets)."""

from __future__ import annotations

import re
import socket
import time

import httpx
from harness import PAYLOADS, SOAP_HEADERS, is_ack, ssl_context

BODY = (PAYLOADS / "amplabs-create_account.xml").read_bytes()


def free_ipv6_port() -> int:
    with socket.socket(socket.AF_INET6) as probe:
        probe.bind(("::1", 0))
        return int(probe.getsockname()[1])


def client(server, case) -> httpx.Client:
    context = ssl_context(server.ca_path)
    context.load_cert_chain(case.chain, case.key)
    return httpx.Client(verify=context, timeout=20)


def test_a_refusal_and_its_reasons_share_the_correlation_id(omgate_server, client_pki):
    server = omgate_server({"client_auth": {"mode": "require"}})
    with client(server, client_pki.cases["expired"]) as http:
        refused = http.post(f"{server.url}/salesforce/outbound", content=BODY,
                            headers=SOAP_HEADERS)
    assert refused.status_code == 403
    correlation = refused.headers["x-correlation-id"]
    decision = server.wait_for("client_auth.decision",
                               lambda e: e.get("correlation_id") == correlation)
    assert [f["code"] for f in decision["findings"]] == ["expired"]
    rejected = server.wait_for("om.rejected", lambda e: e["correlation_id"] == correlation)
    assert rejected["peer"] == decision["peer"]


def test_an_ipv6_clients_address_reads_the_same_on_every_line(omgate_server, client_pki):
    port = free_ipv6_port()
    server = omgate_server({"server": {"bind": [f"[::1]:{port}"]},
                            "client_auth": {"mode": "require"}}, port=port)
    url = f"https://[::1]:{port}"
    with client(server, client_pki.cases["valid"]) as http:
        accepted = http.post(f"{url}/salesforce/outbound", content=BODY, headers=SOAP_HEADERS)
        unknown = http.post(f"{url}/elsewhere", content=BODY, headers=SOAP_HEADERS)
    assert is_ack(accepted)
    assert unknown.status_code == 404
    lines = [server.wait_for(name, lambda e, wanted=response: e.get("correlation_id")
                             == wanted.headers["x-correlation-id"])
             for name, response in (("om.accepted", accepted), ("client_auth.decision", accepted),
                                    ("om.rejected", unknown))]
    peers = {line["peer"] for line in lines}
    assert len(peers) == 1, peers
    assert peers.pop().startswith("[::1]:")


def test_the_console_shows_a_decision_the_way_inspect_shows_findings(omgate_server,
                                                                     client_pki):
    server = omgate_server({"client_auth": {"mode": "require"}},
                           env={"OMGATE_LOGGING__FORMAT": "console"})
    with client(server, client_pki.cases["expired"]) as http:
        assert http.post(f"{server.url}/salesforce/outbound", content=BODY,
                         headers=SOAP_HEADERS).status_code == 403
    deadline = time.monotonic() + 5
    while "client_auth.decision" not in (text := server.log_path.read_text()):
        assert time.monotonic() < deadline, text
        time.sleep(0.1)
    lines = re.sub(r"\x1b\[[0-9;]*m", "", text).splitlines()  # the renderer's colours
    at = next(i for i, line in enumerate(lines) if "client_auth.decision" in line)
    assert "outcome=reject" in lines[at] and "findings=" not in lines[at]
    assert "'subject'" not in lines[at]  # no Python dicts of certificates on the line
    assert lines[at + 1].strip().startswith("ERROR expired [certificate 0]: Certificate 0")
    assert lines[at + 2].strip().startswith("fix: The sender must renew its certificate")
