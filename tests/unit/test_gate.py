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
from service.forwarded import ForwardingSettings, forwarded_format
from service.forwarded.origin import ConnectionOrigin, RequestOrigin, resolve
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
                           forwarded_format="xfcc", proxy=ipaddress.ip_address("10.0.0.2"))
    chosen = applicable(connection(pki), origin, "203.0.113.9:0")
    assert chosen.per_request
    assert chosen.identity.source == "forwarded"
    assert chosen.identity.chain == forwarded.certificates
    assert chosen.identity.forwarded_format == "xfcc"
    assert chosen.proxy == "10.0.0.2"


def test_a_trusted_proxy_that_forwarded_no_certificate_relays_a_client_without_one(pki):
    """The TLS connection is the proxy's own: its chain is not the client's."""
    origin = RequestOrigin(ipaddress.ip_address("10.0.0.2"), ipaddress.ip_address("203.0.113.9"),
                           from_trusted_proxy=True, forwarded_format="pem-header",
                           proxy=ipaddress.ip_address("10.0.0.2"))
    chosen = applicable(connection(pki), origin, "203.0.113.9:0")
    assert chosen.per_request and not chosen.identity.presented
    assert chosen.identity.source == "forwarded"
    assert chosen.identity.forwarded_format == "pem-header"
    assert chosen.proxy == "10.0.0.2"


def test_the_proxy_named_is_the_one_that_forwarded_not_the_balancer_relaying_it(pki):
    """A load balancer (PROXY protocol) relays a trusted proxy that forwarded nothing: the
    decision names that proxy (a review found the balancer named instead)."""
    balancer, proxy = ipaddress.ip_address("10.0.0.5"), ipaddress.ip_address("10.0.0.9")
    settings = ForwardingSettings((ipaddress.ip_network("10.0.0.0/24"),), forwarded_format("xfcc"))
    origin = resolve({}, balancer, proxy, settings, relayed=True)
    chosen = applicable(connection(pki), origin, "198.51.100.7:5000")
    assert chosen.per_request and not chosen.identity.presented
    assert chosen.proxy == "10.0.0.9"


def test_a_trusted_proxy_that_forwards_no_certificates_is_judged_on_its_connection(pki):
    """No forwarded_cert configured: the proxy authenticates with its own chain."""
    origin = RequestOrigin(ipaddress.ip_address("10.0.0.2"), ipaddress.ip_address("203.0.113.9"),
                           from_trusted_proxy=True)
    facts = connection(pki)
    chosen = applicable(facts, origin, "203.0.113.9:0")
    assert chosen.identity is facts.client and not chosen.per_request


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



def test_a_chain_spliced_into_one_unreadable_entry_never_takes_the_chains_verdict(pki):
    """Anyone may know a sender's public chain. Sent as one entry (leaf and intermediate
    run together, which no parser reads), it hashed to the chain's fingerprint: its
    refusal, cached, refused the real sender for a minute (an attacker's review)."""
    from cryptography.hazmat.primitives.serialization import Encoding

    from service.clientauth import HandshakeFacts, VerifyResult
    from service.clientauth.presented import load_chain

    policy = Policy(mode="require", anchors=(pki.root.certificate,))
    leaf, intermediate = (pki.leaf.certificate.public_bytes(Encoding.DER),
                          pki.intermediate.certificate.public_bytes(Encoding.DER))
    verified = tuple(VerifyResult(depth, 0, "ok", "x") for depth in (2, 1, 0))
    sender = load_chain([leaf, intermediate]).identity(
        "tls", "203.0.113.1:443",
        HandshakeFacts(verify_results=verified, verified_under=policy.verification_digest))
    spliced = load_chain([leaf + intermediate]).identity(
        "tls", "198.51.100.66:1234", HandshakeFacts(verified_under=policy.verification_digest))
    assert spliced.unreadable and not spliced.chain
    assert spliced.chain_sha256 != sender.chain_sha256
    gate = ClientAuthGate(policy)
    assert not gate.evaluate(spliced).decision.accepted
    assert gate.evaluate(sender).decision.accepted


def test_chain_fingerprints_of_readable_chains_are_their_der_run_together(pki):
    """What the registry, the inbox and the log have always keyed chains by."""
    import hashlib

    from cryptography.hazmat.primitives.serialization import Encoding

    from service.clientauth.model import chain_fingerprint

    chain = (pki.leaf.certificate, pki.intermediate.certificate)
    run = b"".join(certificate.public_bytes(Encoding.DER) for certificate in chain)
    assert chain_fingerprint(chain) == hashlib.sha256(run).hexdigest()


def test_a_decision_kept_for_a_chain_with_a_huge_subject_stays_small():
    """OpenSSL's complaints name the certificate's subject; a self-signed one with a
    45 KB subject made each of the cache's 10,000 entries hold 45 KB (an attacker's
    review: 439 MiB at the cache's limit)."""
    import gc
    import tracemalloc

    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ed25519
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import NameOID

    from service.clientauth import HandshakeFacts, VerifyResult
    from service.clientauth.presented import load_chain
    from service.gate.cache import CACHE_LIMIT
    from service.tls import openssl_glue

    key = ed25519.Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "u" * 60)] * 700)

    def hostile(serial: int) -> bytes:
        return (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(key.public_key()).serial_number(serial)
                .not_valid_before(NOW - dt.timedelta(days=1))
                .not_valid_after(NOW + dt.timedelta(days=1))
                .sign(key, None).public_bytes(Encoding.DER))

    gate = ClientAuthGate(Policy(mode="require", anchors=()))
    chains = [hostile(serial) for serial in range(1, 31)]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for der in chains:
        subject = openssl_glue._read_subject(der)  # what the verify callback records
        facts = HandshakeFacts(verify_results=(VerifyResult(0, 18, "self-signed", subject),))
        gate.evaluate(load_chain([der]).identity("tls", "198.51.100.9:1", facts))
        del facts, subject
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    held = sum(stat.size_diff for stat in after.compare_to(before, "filename")) / len(chains)
    assert held * CACHE_LIMIT < 32 * 2**20, f"{held:.0f} bytes an entry"
