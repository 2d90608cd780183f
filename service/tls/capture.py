"""Turn a finished (or refused) handshake into handshake facts and a presented chain."""

from __future__ import annotations

from dataclasses import dataclass

from OpenSSL import SSL, crypto
from OpenSSL.crypto import FILETYPE_ASN1, dump_certificate, load_certificate

from service.clientauth import HandshakeFacts, VerifyResult
from service.clientauth.presented import PresentedChain, load_chain
from service.tls import openssl_glue
from service.tls.resumption import TicketChains

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


@dataclass(frozen=True)
class Captured:
    presented: PresentedChain
    verify_results: tuple[VerifyResult, ...]
    size: int = 0  # bytes presented: what remembering it for resumption costs


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


def captured(der: list[bytes], state: openssl_glue.ConnectionState) -> Captured:
    return Captured(load_chain(der), tuple(state.verify_results),
                    sum(map(len, der)))


def capture_chain(connection: SSL.Connection, state: openssl_glue.ConnectionState,
                  resumed_from: Captured | None) -> Captured:
    """The chain as the client sent it; for a resumed session, the chain of the handshake
    its ticket was issued on (``resumed_from``, from the ticket memory)."""
    peer_der = _peer_der(connection)
    if openssl_glue.session_reused(connection):
        if resumed_from is not None:
            return resumed_from
        # Never expected: an unknown ticket is declined before OpenSSL resumes it.
        state.problems.append("a resumed session whose chain omgate does not know")
        return captured(peer_der, state)
    if state.presented_der is not None and not same_leaf(state.presented_der, peer_der):
        # Never expected: the Certificate message as read disagrees with OpenSSL's peer.
        # OpenSSL's copy is the one it verified, so decide again on that.
        state.problems.append("the Certificate message's leaf is not OpenSSL's peer")
        state.presented_der, state.verdict = None, None
    return captured(peer_der if state.presented_der is None else state.presented_der, state)


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


@dataclass
class SessionTickets:
    """One connection's part in resumption: which chain the tickets it offers stand for,
    and the chain behind the tickets it is issued (``generation``: its context's)."""

    tickets: TicketChains[Captured]
    generation: int
    connection: SSL.Connection
    state: openssl_glue.ConnectionState
    resumed_from: Captured | None = None
    captured: Captured | None = None

    def client_hello(self, offered: list[bytes]) -> bool:
        self.resumed_from = self.tickets.chain_for(offered)
        return self.tickets.must_decline(offered)

    def issued(self, ticket: bytes) -> None:
        """Tickets are issued once the handshake is complete: the chain is final."""
        if self.captured is None:
            self.captured = capture_chain(self.connection, self.state, self.resumed_from)
        self.tickets.remember(ticket, self.captured, self.captured.size, self.generation)

    def chain(self) -> Captured:
        return self.captured or capture_chain(self.connection, self.state, self.resumed_from)
