"""Accept connections, complete TLS handshakes, capture the client chain, serve HTTP.

Per TLS connection: handshake (bounded by ``handshake_timeout``), capture of
the chain as presented with OpenSSL's per-depth results, one client-auth
verdict from the gate, and then HTTP through hypercorn with the TLS facts in
``scope["extensions"]``. A failed handshake is logged as ``tls.handshake_failed``
and never disturbs other connections.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from OpenSSL import SSL

from service.clientauth import HandshakeFacts, VerifyResult
from service.clientauth.presented import NOTHING_PRESENTED
from service.forwarded import format_address
from service.forwarded.origin import ConnectionOrigin
from service.gate import ClientAuthGate, Verdict
from service.identity import CONNECTION_KEY, ConnectionDecisions, ConnectionFacts
from service.listeners.proxy_header import OriginReader, direct_origin
from service.listeners.serving import HttpServing
from service.logs import get_logger
from service.metrics import Metrics
from service.tls import openssl_glue
from service.tls.capture import (
    CIPHER_SUITE_NUMBERS,
    TLS_VERSION_NUMBERS,
    Captured,
    SessionTickets,
    handshake_facts,
)
from service.tls.context import ServerTls, TlsSetupError
from service.tls.layer import TlsLayer
from service.tls.resumption import TicketChains
from service.tls.stream import HandshakeError, TlsStream

log = get_logger("omgate")
# After an alert, what a client may still send before it reads it (its flight of the
# handshake: certificates, key exchange, Finished) and how long omgate waits for it.
LINGER_BYTES = 64 * 1024
LINGER_SECONDS = 2.0


def tls_extension(captured: Captured, connection: SSL.Connection,
                  verdict: Verdict) -> dict[str, Any]:
    """The ASGI TLS extension (scope["extensions"]["tls"])."""
    presented = captured.presented
    chain = presented.certificates
    first_error = next((r for r in captured.verify_results if r.error), None)
    return {
        "server_cert": None,
        "client_cert_chain": list(presented.pem),
        "client_cert_name": presented.leaf_subject,
        "client_cert_error": first_error.error_text if first_error else (
            None if verdict.decision.accepted or not chain else "rejected by omgate policy"),
        "tls_version": TLS_VERSION_NUMBERS.get(connection.get_protocol_version_name()),
        "cipher_suite": CIPHER_SUITE_NUMBERS.get(connection.get_cipher_name() or ""),
    }


# The X509 error whose alert best names a refusal (OpenSSL maps errors to alerts).
_REFUSAL_ERRORS = {
    "expired": 10,  # certificate_expired
    "not_yet_valid": 9,  # bad_certificate
    "revoked": 23,  # certificate_revoked
    "untrusted_root": 20, "missing_intermediate": 20, "self_signed": 18,  # unknown_ca
    "depth_exceeded": 22,  # unknown_ca
    "issuer_not_a_ca": 79, "path_length_exceeded": 25,  # unknown_ca, bad_certificate
    "unknown_critical_extension": 34, "name_constraints_violated": 47,
    "bad_signature": 7,  # decrypt_error
}
_CERT_REJECTED = 28  # bad_certificate


def refusal_error(verdict: Verdict) -> int:
    first = next((f for f in verdict.decision.findings if f.severity == "error"), None)
    return _REFUSAL_ERRORS.get(first.code, _CERT_REJECTED) if first else _CERT_REJECTED




@dataclass
class TlsConnectionHandler:
    """Runs one accepted TLS connection from handshake to close."""

    server_tls: ServerTls
    gate: ClientAuthGate
    serving: HttpServing
    handshake_timeout: float
    refuse_in_handshake: bool
    advertised_ca_names: tuple[str, ...]
    metrics: Metrics | None = None
    read_origin: OriginReader = direct_origin
    verified_under: str = ""  # Policy.verification_digest of the settings OpenSSL verifies with

    def _facts(self, connection: SSL.Connection, results: tuple[VerifyResult, ...],
               resumed: bool = False) -> HandshakeFacts:
        return handshake_facts(connection, results, advertised=self.advertised_ca_names,
                               verified_under=self.verified_under, resumed=resumed)

    def _verify_step(self, connection: SSL.Connection, peer: str | None
                     ) -> Callable[[openssl_glue.ConnectionState, VerifyResult], int | None]:
        """Decide at the first verify call, from the chain as presented, and again whenever
        OpenSSL reports a new error while the verdict still accepts (its third opinion is
        complete only at the end); refuse if enforced.

        OpenSSL turns the X509 error returned into the alert the client sees.
        """
        def step(state: openssl_glue.ConnectionState, result: VerifyResult) -> int | None:
            verdict: Verdict | None = state.verdict
            if verdict is None or (result.error and verdict.decision.accepted):
                presented = openssl_glue.presented_chain(state) or NOTHING_PRESENTED
                facts = self._facts(connection, tuple(state.verify_results))
                identity = presented.identity("tls", peer, facts)
                verdict = state.verdict = self.gate.evaluate(identity)
            return refusal_error(verdict) if verdict.refuse else None

        return step

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        origin = await self.read_origin(reader, writer)
        if origin is None:
            writer.close()
            return
        peer = origin.label()
        state = openssl_glue.ConnectionState()
        tickets = self._ticket_memory()
        connection = SSL.Connection(self.server_tls.context, None)
        session = SessionTickets(tickets, tickets.generation, connection, state)
        state.on_client_hello, state.on_ticket = session.client_hello, session.issued
        if self.refuse_in_handshake:
            state.verify_step = self._verify_step(connection, peer)
        connection.set_app_data(state)
        connection.set_accept_state()
        stream = TlsStream(connection, reader, writer)
        try:
            async with asyncio.timeout(self.handshake_timeout):  # no task, unlike wait_for
                await stream.handshake()
        except (HandshakeError, TimeoutError, OSError) as error:
            if isinstance(error, HandshakeError) and error.alert_sent:
                await stream.linger(LINGER_BYTES, min(LINGER_SECONDS, self.handshake_timeout))
            writer.close()
            await self._handshake_failed(error, connection, state, peer)
            return
        try:
            await self._serve(stream, connection, state, session, origin)
        finally:
            stream.close()

    def _ticket_memory(self) -> TicketChains[Captured]:
        """The ticket memory, renewed with the ticket keys once it is full."""
        if self.server_tls.tickets.full:
            try:
                self.server_tls.renew_ticket_keys()
            except TlsSetupError as error:  # unknown tickets stay declined meanwhile
                log.error("tls.ticket_keys_not_renewed", reason=str(error))
            else:
                log.info("tls.ticket_keys_renewed",
                         generation=self.server_tls.tickets.generation)
        return self.server_tls.tickets

    async def _handshake_failed(self, error: Exception, connection: SSL.Connection,
                                state: openssl_glue.ConnectionState, peer: str | None) -> None:
        if isinstance(error, HandshakeError):
            reason, detail = error.reason, error.detail
        elif isinstance(error, TimeoutError):
            reason, detail = "timeout", f"no handshake within {self.handshake_timeout:g} s"
        else:
            reason, detail = "connection_error", str(error)
        if state.refused_sni is not None:
            reason = "unknown_sni"
            detail = f"SNI {state.refused_sni!r} is not in server.public_names"
        log.warning("tls.handshake_failed", peer=peer, reason=reason, stage="handshake",
                    detail=detail)
        if self.metrics is not None:
            self.metrics.handshake_failures.labels(reason).inc()
        presented = openssl_glue.presented_chain(state)
        if presented is None and reason != "no_client_cert":
            return
        identity = (presented or NOTHING_PRESENTED).identity(
            "tls", peer, self._facts(connection, tuple(state.verify_results)))
        # omgate refused it (its verify step, or require with no certificate), or the
        # handshake failed otherwise: then the client never proved it holds the key.
        refused = (state.verdict is not None and state.verdict.refuse) or (
            reason == "no_client_cert" and self.refuse_in_handshake)
        verdict = state.verdict or await self.gate.evaluate_async(identity)
        self.gate.record(identity, verdict, handshake="refused" if refused else "failed",
                         hook_problems=tuple(state.problems))

    async def _serve(self, stream: TlsStream, connection: SSL.Connection,
                     state: openssl_glue.ConnectionState, session: SessionTickets,
                     origin: ConnectionOrigin) -> None:
        peer = origin.label()
        resumed = openssl_glue.session_reused(connection)
        captured = session.chain()
        state.presented_der = None  # read into ``captured``; not held by an idle connection
        identity = captured.presented.identity(
            "tls", peer, self._facts(connection, captured.verify_results, resumed))
        verdict = state.verdict or await self.gate.evaluate_async(identity)
        facts = ConnectionFacts(origin, identity, verdict,
                                ConnectionDecisions(
                                    format_address(origin.peer) if origin.proxied else None,
                                    tuple(state.problems)))
        if verdict.refuse and self.refuse_in_handshake:
            facts.record_once(self.gate)
            return  # a resumed session of a chain now refused: close_notify, nothing served
        try:
            await self.serving.serve(stream.reader, stream.writer, {
                "tls": tls_extension(captured, connection, verdict), CONNECTION_KEY: facts},
                TlsLayer(connection))
        finally:
            facts.record_once(self.gate)  # a connection that sent no request
