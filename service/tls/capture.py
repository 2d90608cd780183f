"""Turn a finished (or refused) handshake into handshake facts and a presented chain."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

from OpenSSL import SSL, crypto
from OpenSSL.crypto import FILETYPE_ASN1, dump_certificate, load_certificate

from service.clientauth import HandshakeFacts, VerifyResult
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
    presented: openssl_glue.PresentedChain
    verify_results: tuple[VerifyResult, ...]
    # SHA-256 of the leaf's DER as sent: the key a resumed session is recalled by.
    leaf_sha256: str = ""


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
        if not captured.leaf_sha256:
            return
        key = captured.leaf_sha256
        self._entries[key] = captured
        self._entries.move_to_end(key)
        if len(self._entries) > self._limit:
            self._entries.popitem(last=False)

    def recall(self, leaf_sha256: str) -> Captured | None:
        return self._entries.get(leaf_sha256)


def _peer_der(connection: SSL.Connection) -> list[bytes]:
    """Leaf from get_peer_certificate, then the rest as sent (the server side omits the leaf)."""
    leaf = connection.get_peer_certificate()
    if leaf is None:
        return []
    leaf_der = dump_certificate(FILETYPE_ASN1, leaf)
    sent = connection.get_peer_cert_chain() or []
    rest = [dump_certificate(FILETYPE_ASN1, item) for item in sent]
    if rest and rest[0] == leaf_der:
        rest = rest[1:]
    return [leaf_der, *rest]


def _as_openssl_encodes(der: bytes) -> bytes | None:
    try:
        return dump_certificate(FILETYPE_ASN1, load_certificate(FILETYPE_ASN1, der))
    except crypto.Error:
        return None


def same_leaf(presented_der: list[bytes], peer_der: list[bytes]) -> bool:
    """Whether the message's leaf is OpenSSL's peer, compared as OpenSSL encodes both
    (it re-encodes a leaf sent in loose DER; the bytes as sent are what gets judged)."""
    if not presented_der or not peer_der:
        return not presented_der and not peer_der
    return (presented_der[0] == peer_der[0]
            or _as_openssl_encodes(presented_der[0]) == peer_der[0])


def _captured(der: list[bytes], state: openssl_glue.ConnectionState) -> Captured:
    return Captured(openssl_glue.load_chain(der), tuple(state.verify_results),
                    hashlib.sha256(der[0]).hexdigest() if der else "")


def capture_chain(connection: SSL.Connection, state: openssl_glue.ConnectionState,
                  memory: ResumptionMemory, resumed: bool) -> Captured:
    """The chain as the client sent it; for a resumed session, as it was first sent."""
    peer_der = _peer_der(connection)
    if state.presented_der is not None and not same_leaf(state.presented_der, peer_der):
        # Never expected: the Certificate message as read disagrees with OpenSSL's peer.
        # OpenSSL's copy is the one it verified, so decide again on that.
        state.problems.append("the Certificate message's leaf is not OpenSSL's peer")
        state.presented_der, state.verdict = None, None
    if state.presented_der is not None:
        captured = _captured(state.presented_der, state)
        memory.remember(captured)
        return captured
    if resumed and peer_der:
        recalled = memory.recall(hashlib.sha256(peer_der[0]).hexdigest())
        if recalled is not None:
            return recalled
    return _captured(peer_der, state)


def handshake_facts(connection: SSL.Connection, verify_results: tuple[VerifyResult, ...], *,
                    advertised: tuple[str, ...], verified_under: str,
                    resumed: bool = False) -> HandshakeFacts:
    """What the handshake showed, complete or not (a refused one knows less)."""
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
        verified_under=verified_under,
    )
