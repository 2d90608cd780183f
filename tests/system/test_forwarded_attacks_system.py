"""An attacker behind a trusted RFC 7239 proxy, against a real omgate."""

from __future__ import annotations

from urllib.parse import quote

import httpx
from behind_proxy import BODY
from harness import SOAP_HEADERS, free_port, is_ack


def test_a_client_behind_an_rfc7239_proxy_cannot_pass_for_an_allowed_network(omgate_server):
    """The client sends ``Forwarded: for=198.51.100.7;x=y\\``; the trusted proxy appends
    ``, for=<the client>`` as RFC 7239 section 4 says. The backslash, read as an escape
    outside quotes, swallowed the proxy's element: omgate took 198.51.100.7, inside
    allowed_client_networks, and stored the message."""
    plain = free_port()
    server = omgate_server({
        "server": {"plain_bind": [f"127.0.0.1:{plain}"], "trusted_proxies": ["127.0.0.1/32"],
                   "client_address_header": "forwarded",
                   "allowed_client_networks": ["198.51.100.0/24"]},
        "client_auth": {"mode": "off"}})
    url = f"http://127.0.0.1:{plain}/salesforce/outbound"
    # the test plays the trusted proxy: it appends the client it saw, 203.0.113.66
    honest = httpx.post(url, content=BODY, headers={
        **SOAP_HEADERS, "Forwarded": "for=203.0.113.66"})
    assert honest.status_code == 403
    forged = httpx.post(url, content=BODY, headers={
        **SOAP_HEADERS, "Forwarded": "for=198.51.100.7;x=y\\, for=203.0.113.66"})
    assert not is_ack(forged), "a client outside allowed_client_networks was acknowledged"
    assert forged.status_code == 403
    server.wait_for("om.rejected", lambda e: "203.0.113.66" in e.get("detail", ""))


def test_with_no_proxy_trusted_forwarded_headers_pass_nobody_off_as_another(
        omgate_server):
    """No proxy is trusted: a client that names an allowed address in every forwarded
    header there is (any case, sent twice) is still judged as the TCP peer it is, on the
    plain listener and on the TLS one, and its decision line says what it forwarded."""
    plain = free_port()
    server = omgate_server({
        "server": {"plain_bind": [f"127.0.0.1:{plain}"],
                   "allowed_client_networks": ["198.51.100.0/24", "127.0.0.1/32"]}})
    forged = [("X-Forwarded-For", "198.51.100.7"), ("x-forwarded-for", "198.51.100.8"),
              ("Forwarded", "for=198.51.100.7"), ("X-Real-IP", "198.51.100.7"),
              ("Content-Type", SOAP_HEADERS["Content-Type"])]
    over_tls = server.post(BODY, headers=httpx.Headers(forged))
    assert is_ack(over_tls)  # from 127.0.0.1, which is allowed
    decision = server.wait_for("client_auth.decision", lambda e: any(
        f["code"] == "forwarded_from_untrusted_peer" for f in e["findings"]))
    assert decision["peer"].startswith("127.0.0.1") and decision["source"] == "tls"
    [finding] = [f for f in decision["findings"] if f["code"] == "forwarded_from_untrusted_peer"]
    for name in ("forwarded", "x-forwarded-for", "x-real-ip"):
        assert name in finding["message"]
    server.stop()
    plain = free_port()
    only_proxies = omgate_server({
        "server": {"plain_bind": [f"127.0.0.1:{plain}"],
                   "allowed_client_networks": ["198.51.100.0/24"]},
        "client_auth": {"mode": "off"}})
    refused = httpx.post(f"http://127.0.0.1:{plain}/salesforce/outbound", content=BODY,
                         headers=httpx.Headers(forged))
    assert not is_ack(refused), "a forwarded header made 127.0.0.1 pass for an allowed address"
    assert refused.status_code == 403
    only_proxies.wait_for("om.rejected", lambda e: "127.0.0.1" in e.get("detail", ""))


def test_a_trusted_proxy_that_forwards_no_certificate_cannot_pass_off_its_own(
        omgate_server, client_pki):
    """A proxy terminates its clients' TLS and connects to omgate's TLS listener with a
    certificate of its own, one the policy accepts, and forwards each client's certificate
    in a header. A client that gave the proxy none arrives with no header: omgate judged
    the proxy's own chain instead, and stored the message. A request a trusted proxy
    relays is judged on what it forwarded, and nothing forwarded is no certificate."""
    server = omgate_server({
        "server": {"trusted_proxies": ["127.0.0.1/32"]},
        "client_auth": {"mode": "require", "forwarded_cert": "aws-alb"}})
    proxy = client_pki.cases["valid"]
    relayed = {**SOAP_HEADERS, "X-Forwarded-For": "203.0.113.66"}
    refused = server.post(BODY, headers=relayed, cert=proxy)
    assert not is_ack(refused), "a client with no certificate passed with the proxy's"
    assert refused.status_code == 403
    decision = server.wait_for("client_auth.decision",
                               lambda e: e["source"] == "forwarded" and e["chain"] == [])
    assert decision["outcome"] == "reject" and decision["proxy"] == "127.0.0.1"
    accepted = server.post(BODY, cert=proxy, headers={  # as ALB forwards a chain
        **relayed, "X-Amzn-Mtls-Clientcert": quote(proxy.chain.read_text(), safe="")})
    assert is_ack(accepted)
    server.wait_for("client_auth.decision", lambda e: e["source"] == "forwarded"
                    and e["outcome"] == "accept")
