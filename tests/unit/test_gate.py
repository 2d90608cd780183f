"""The gate and the seam in front of it, without sockets: which identity applies to a
request, the decision cache and the decision line's chain field."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress

import pytest
from corpus import build_pki
from structlog.testing import capture_logs

from service.clientauth import ClientIdentity, Decision, Policy
from service.clientauth.presented import PresentedChain
from service.forwarded.origin import ConnectionOrigin, RequestOrigin
from service.gate import ClientAuthGate, Verdict
from service.gate.cache import DecisionCache, cache_key
from service.gate.decision_log import SeenChains, decision_fields
from service.identity import (
    CONNECTION_KEY,
    ORIGIN_KEY,
    ConnectionDecisions,
    ConnectionFacts,
    applicable,
    request_identity,
)

NOW = dt.datetime.now(dt.UTC)
ACCEPT = Verdict(Decision("accept", ()), "require", True)


@pytest.fixture(scope="module")
def pki():
    return build_pki(NOW)


def tls_identity(pki) -> ClientIdentity:
    return ClientIdentity((pki.leaf.certificate, pki.intermediate.certificate), "tls",
                          "198.51.100.7:5000")


def connection(pki) -> ConnectionFacts:
    return ConnectionFacts(ConnectionOrigin(("198.51.100.7", 5000)), tls_identity(pki), ACCEPT,
                           ConnectionDecisions())


# -- which identity applies -----------------------------------------------------------------


def test_the_tls_connections_identity_applies_when_nothing_was_forwarded(pki):
    facts = connection(pki)
    chosen = applicable(facts, RequestOrigin(None, None), "198.51.100.7:5000")
    assert chosen.identity is facts.client and not chosen.per_request


def test_a_certificate_a_trusted_proxy_forwarded_wins(pki):
    forwarded = PresentedChain((pki.extras["expired"].certificate,))
    origin = RequestOrigin(ipaddress.ip_address("10.0.0.2"), ipaddress.ip_address("203.0.113.9"),
                           from_trusted_proxy=True, forwarded_chain=forwarded,
                           forwarded_format="xfcc")
    chosen = applicable(connection(pki), origin, "203.0.113.9:0")
    assert chosen.per_request
    assert chosen.identity.source == "forwarded"
    assert chosen.identity.chain == forwarded.certificates
    assert chosen.identity.forwarded_format == "xfcc"
    assert chosen.proxy == "10.0.0.2"


def test_headers_an_untrusted_peer_forwarded_make_a_decision_of_the_request(pki):
    origin = RequestOrigin(ipaddress.ip_address("198.51.100.7"), None,
                           ignored_headers=("x-forwarded-client-cert",))
    chosen = applicable(connection(pki), origin, "198.51.100.7:5000")
    assert chosen.per_request
    assert chosen.identity.chain == tls_identity(pki).chain
    assert chosen.identity.ignored_headers == ("x-forwarded-client-cert",)


def test_on_a_plain_listener_no_forwarded_certificate_means_none(pki):
    chosen = applicable(ConnectionFacts(ConnectionOrigin(("10.0.0.2", 40000))),
                        RequestOrigin(None, None), "10.0.0.2:40000")
    assert chosen.per_request and not chosen.identity.presented
    assert chosen.identity.source == "forwarded"


def test_a_connections_decision_is_logged_once_and_endpoints_once_each(pki):
    gate = ClientAuthGate(Policy(mode="require", anchors=(pki.root.certificate,)))
    strict = Policy(mode="require", anchors=(pki.root.certificate,),
                    allowed_names=("someone.else",))
    facts = connection(pki)
    extensions = {CONNECTION_KEY: facts, ORIGIN_KEY: RequestOrigin(None, None)}

    async def requests() -> list[Verdict]:
        verdicts = []
        for policy, endpoint in ((None, "/a"), (None, "/a"), (strict, "/strict"),
                                 (strict, "/strict")):
            applied = await request_identity(extensions, gate, policy, endpoint, "peer")
            verdicts.append(applied.verdict)
        return verdicts

    with capture_logs() as logged:
        listener, again, strict_first, strict_again = asyncio.run(requests())
    assert listener is ACCEPT and again is ACCEPT
    assert not strict_first.decision.accepted and strict_again is strict_first
    decisions = [event for event in logged if event["event"] == "client_auth.decision"]
    assert [(event["log_level"], event.get("endpoint")) for event in decisions] == [
        ("info", None), ("warning", "/strict")]


# -- the decision cache ---------------------------------------------------------------------


def test_cached_decisions_expire_and_are_kept_per_policy(pki):
    cache = DecisionCache(ttl=60)
    identity = tls_identity(pki)
    listener, endpoint = Policy(mode="require"), Policy(mode="require")
    decision = Decision("accept", ())
    cache.put(cache_key(identity, listener), NOW, decision)
    assert cache.get(cache_key(identity, listener), NOW + dt.timedelta(seconds=59)) is decision
    assert cache.get(cache_key(identity, listener), NOW + dt.timedelta(seconds=61)) is None
    assert cache.get(cache_key(identity, endpoint), NOW) is None  # another policy object


def test_the_gate_evaluates_a_chain_once_per_policy_while_cached(pki, monkeypatch):
    from service.gate import core

    calls = []
    real = core.evaluate
    monkeypatch.setattr(core, "evaluate", lambda *args: calls.append(args) or real(*args))
    policy = Policy(mode="require", anchors=(pki.root.certificate,))
    gate = ClientAuthGate(policy)
    first = gate.evaluate(tls_identity(pki))
    second = gate.evaluate(tls_identity(pki))  # a new connection, the same chain
    assert first == second and len(calls) == 1
    gate.evaluate(tls_identity(pki), Policy(mode="require", anchors=(pki.root.certificate,)))
    assert len(calls) == 2


# -- the decision line ----------------------------------------------------------------------


def test_a_chain_is_logged_in_full_the_first_time_then_by_fingerprint_only(pki):
    seen = SeenChains()
    identity = tls_identity(pki)
    first = decision_fields(identity, ACCEPT, "accept", seen, NOW)
    second = decision_fields(identity, ACCEPT, "accept", seen, NOW)
    assert [c["subject"] for c in first["chain"]] == [
        c.subject.rfc4514_string() for c in identity.chain]
    assert "chain" not in second
    assert first["chain_sha256"] == second["chain_sha256"] == identity.chain_sha256
    nothing = decision_fields(ClientIdentity((), "tls"), ACCEPT, "accept", seen, NOW)
    assert nothing["chain"] == [] and nothing["chain_sha256"] is None

