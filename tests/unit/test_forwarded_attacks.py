"""An attacker's review of the forwarded facts: what a client behind a trusted proxy can make
omgate believe about its address and certificate, and what one client's decision says of
another."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress

import pytest
from corpus import build_pki
from cryptography import x509
from envoy_xfcc import pem

from service.clientauth import ClientIdentity, Policy
from service.forwarded import ForwardingSettings, forwarded_format, parse_address
from service.forwarded.origin import RequestOrigin
from service.gate import ClientAuthGate
from service.identity import ORIGIN_KEY
from service.origin_middleware import ForwardedMiddleware

TRUSTED = (ipaddress.ip_network("10.0.0.0/8"),)
PROXY = ("10.0.0.2", 40000)  # the trusted proxy's connection
ATTACKER = "203.0.113.66"  # where the client really is; the proxy names it


def origin_of(raw_headers: list[tuple[bytes, bytes]], settings: ForwardingSettings
              ) -> RequestOrigin:
    """The origin ForwardedMiddleware gives a request the trusted proxy sent with these
    header lines (as hypercorn hands them over: lower-case names, in order)."""
    seen: list[RequestOrigin] = []

    async def app(scope: dict, _receive: object, _send: object) -> None:
        seen.append(scope["extensions"][ORIGIN_KEY])

    middleware = ForwardedMiddleware(app, settings)
    asyncio.run(middleware({"type": "http", "headers": raw_headers, "client": PROXY,
                            "extensions": {}}, None, None))
    return seen[0]


# -- Forwarded (RFC 7239): the client's own element can swallow the proxy's ------------------

@pytest.mark.parametrize("proxy_appends", ["one line", "a line of its own"])
def test_a_client_cannot_choose_its_address_by_escaping_the_proxys_comma(proxy_appends):
    """RFC 7239 proxies append ``, for=<peer>`` to the Forwarded header the client sent.
    A backslash is an escape only inside a quoted string (RFC 9110 quoted-pair); read as
    one outside, the client's trailing ``\\`` escapes the proxy's comma, the proxy's element
    becomes a parameter of the client's, and the client's own ``for=`` is the rightmost:
    any address it likes (an allowed network's, a new one per request past the cap)."""
    settings = ForwardingSettings(TRUSTED, None, "forwarded")
    forged = "for=198.51.100.7;x=y\\"  # 198.51.100.7: say, inside allowed_client_networks
    if proxy_appends == "one line":
        lines = [(b"forwarded", f"{forged}, for={ATTACKER}".encode())]
    else:
        lines = [(b"forwarded", forged.encode()), (b"forwarded", f"for={ATTACKER}".encode())]
    origin = origin_of(lines, settings)
    assert origin.from_trusted_proxy
    assert str(origin.client) == ATTACKER


def test_an_unbalanced_quote_does_not_turn_the_client_into_the_trusted_proxy():
    """A client's ``for="`` left open made the whole header unreadable, and the walk then
    answered with the trusted proxy itself: the client's requests were counted as the
    proxy's (never capped by max_connections_per_peer) and logged with its address."""
    settings = ForwardingSettings(TRUSTED, None, "forwarded")
    origin = origin_of([(b"forwarded", f'for="x, for={ATTACKER}'.encode())], settings)
    assert origin.client != ipaddress.ip_address(PROXY[0])
    assert str(origin.client) == ATTACKER


def test_a_forwarded_address_carries_no_zone_id():
    """Neither X-Forwarded-For nor RFC 7239 node names have IPv6 zone ids; accepted, an
    address carries whatever text follows '%' into scope['client'], every log line's peer
    and the client_address_not_allowed fault."""
    for text in ("fe80::1%\u009b31m", '"[fe80::1%<evil peer=\'x\'>]:1"', "fe80::1%25x"):
        assert parse_address(text) is None, text


# -- pem-header: one certificate, and not the client's -----------------------------------------

@pytest.fixture(scope="module")
def chains(client_pki):
    victim = tuple(x509.load_pem_x509_certificates(client_pki.cases["valid"].chain.read_bytes()))
    own = x509.load_pem_x509_certificate(client_pki.cases["untrusted"].leaf.read_bytes())
    return victim, own, client_pki


def test_a_proxy_appending_to_the_clients_pem_header_in_one_line_does_not_let_it_choose(
        chains):
    """Apache's ``RequestHeader append`` (or ``merge``) adds the proxy's value after the
    client's in the same line, ", " between: no second line, so the "came more than once"
    check never sees it. pem-header took every PEM block in the value, leaf first: the
    client's copy of someone else's public chain, then the certificate it really presented.
    Every writer pem-header names (nginx, Apache, HAProxy) forwards one certificate."""
    victim, own, client_pki = chains
    settings = ForwardingSettings(TRUSTED, forwarded_format("pem-header:X-SSL-Cert"))
    client_wrote = pem(*victim).replace("\n", " ")  # Apache's flattened PEM, as a client can
    proxy_wrote = pem(own).replace("\n", " ")  # %{SSL_CLIENT_CERT}s: what it presented
    origin = origin_of([(b"x-ssl-cert", f"{client_wrote}, {proxy_wrote}".encode())], settings)
    assert origin.forwarded_chain is not None
    gate = ClientAuthGate(Policy(mode="require", anchors=(client_pki.root.certificate,)))
    try:
        verdict = gate.evaluate(origin.forwarded_chain.identity("forwarded", ATTACKER))
    finally:
        gate.close()
    assert verdict.refuse, verdict.decision  # accepted: the client passed for the victim
    assert origin.forwarded_chain.certificates[:1] != victim[:1]


# -- the decision cache: one peer's finding served to another ----------------------------------

def test_a_cached_decision_does_not_name_another_peer():
    """The forwarded_from_untrusted_peer finding names the peer, but the decision cache's
    key leaves the peer out: for a minute, every peer presenting the same chain with
    forwarding headers is logged as if the first one had sent them."""
    pki = build_pki(dt.datetime.now(dt.UTC))
    chain = (pki.leaf.certificate, pki.intermediate.certificate)
    gate = ClientAuthGate(Policy(mode="require", anchors=(pki.root.certificate,)))
    try:
        first = gate.evaluate(ClientIdentity(chain, "tls", "198.51.100.7:5000",
                                             ignored_headers=("x-forwarded-for",)))
        second = gate.evaluate(ClientIdentity(chain, "tls", "192.0.2.44:6000",
                                              ignored_headers=("x-forwarded-for",)))
    finally:
        gate.close()
    [named_first] = [f for f in first.decision.findings
                     if f.code == "forwarded_from_untrusted_peer"]
    assert "198.51.100.7" in named_first.message
    [named_second] = [f for f in second.decision.findings
                      if f.code == "forwarded_from_untrusted_peer"]
    assert "192.0.2.44" in named_second.message, named_second.message
