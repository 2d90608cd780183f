"""Turn a finished (or refused) handshake into handshake facts and a presented chain."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import SSL

from service.clientauth import HandshakeFacts, VerifyResult, fingerprint
from service.tls import openssl_glue

# IANA numbers of the suites the context allows (the ASGI TLS extension reports numbers).
CIPHER_SUITE_NUMBERS = {
    "TLS_AES_128_GCM_SHA256": 0x1301,
    "TLS_AES_256_GCM_SHA384": 0x1302,
    "TLS_CHACHA20_POLY1305_SHA256": 0x1303,
    "ECDHE-ECDSA-AES128-GCM-SHA256": 0xC02B,
    "ECDHE-ECDSA-AES256-GCM-SHA384": 0xC02C,
    "ECDHE-RSA-AES128-GCM-SHA256": 0xC02F,
    "ECDHE-RSA-AES256-GCM-SHA384": 0xC030,
    "ECDHE-ECDSA-CHACHA20-POLY1305": 0xCCA9,
    "ECDHE-RSA-CHACHA20-POLY1305": 0xCCA8,
}
TLS_VERSION_NUMBERS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}
RESUMPTION_MEMORY = 4096


@dataclass(frozen=True)
class Captured:
    chain: tuple[x509.Certificate, ...]
    verify_results: tuple[VerifyResult, ...]


class ResumptionMemory:
    """Chains of full handshakes, by leaf fingerprint, for sessions resumed later.

    A resumed session carries the client's leaf but not the rest of its chain, and
    no verify callback runs; the chain the same leaf presented when it
    authenticated is what the session stands on.
    """

    def __init__(self, limit: int = RESUMPTION_MEMORY) -> None:
        self._entries: OrderedDict[str, Captured] = OrderedDict()
        self._limit = limit

    def remember(self, captured: Captured) -> None:
        if not captured.chain:
            return
        key = fingerprint(captured.chain[0])
        self._entries[key] = captured
        self._entries.move_to_end(key)
        if len(self._entries) > self._limit:
            self._entries.popitem(last=False)

    def recall(self, leaf: x509.Certificate) -> Captured | None:
        return self._entries.get(fingerprint(leaf))


def _peer_chain(connection: SSL.Connection) -> tuple[x509.Certificate, ...]:
    """Leaf from get_peer_certificate, then the rest as sent (the server side omits the leaf)."""
    leaf = connection.get_peer_certificate(as_cryptography=True)
    if leaf is None:
        return ()
    rest = connection.get_peer_cert_chain(as_cryptography=True) or []
    leaf_der = leaf.public_bytes(Encoding.DER)
    if rest and rest[0].public_bytes(Encoding.DER) == leaf_der:
        rest = rest[1:]
    return (leaf, *rest)


def capture_chain(connection: SSL.Connection, state: openssl_glue.ConnectionState,
                  memory: ResumptionMemory, resumed: bool) -> Captured:
    presented = openssl_glue.presented_chain(state)
    if presented is not None:
        captured = Captured(presented, tuple(state.verify_results))
        memory.remember(captured)
        return captured
    chain = _peer_chain(connection)
    if resumed and chain:
        recalled = memory.recall(chain[0])
        if recalled is not None:
            return recalled
    return Captured(chain, tuple(state.verify_results))


def handshake_facts(connection: SSL.Connection, verify_results: tuple[VerifyResult, ...],
                    advertised: tuple[str, ...], resumed: bool) -> HandshakeFacts:
    alpn = connection.get_alpn_proto_negotiated()
    sni = connection.get_servername()
    return HandshakeFacts(
        tls_version=connection.get_protocol_version_name(),
        cipher=connection.get_cipher_name(),
        sni=sni.decode(errors="replace") if sni else None,
        alpn=alpn.decode(errors="replace") if alpn else None,
        resumed=resumed,
        advertised_ca_names=advertised,
        verify_results=verify_results,
    )


def refused_handshake_facts(state: openssl_glue.ConnectionState,
                            advertised: tuple[str, ...]) -> HandshakeFacts:
    return HandshakeFacts(advertised_ca_names=advertised,
                          verify_results=tuple(state.verify_results))
