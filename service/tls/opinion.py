"""OpenSSL's opinion of a chain without a client: the listener's verification, offline.

The listener records what OpenSSL's verify callback reports at every depth while a client
hands over its chain, and the policy refuses a chain on an error nothing explains. The
tools that judge a chain from a file or from the registry (``omgate inspect``, ``chains
simulate``, ``check``) must reach the same verdict, so they get the same opinion, the same
way: a server context set up as the listener's (the trusted certificates, a trusted
intermediate allowed to end a path or not, the depth, the SSL client purpose OpenSSL
applies to a client's chain) receives, over memory BIOs, a TLS 1.2 ClientHello and then a
Certificate message carrying the chain. OpenSSL verifies the chain when that message
arrives, before it would need the client's key, so none is needed; the exchange goes no
further.

Hand-written here because nothing else gives every error: pyOpenSSL's
``X509StoreContext`` stops at the first one and cannot take the SSL client purpose, and
cryptography's bindings lack ``X509_STORE_CTX_set_verify_cb``. The two messages are the
simplest a TLS 1.2 server accepts (RFC 5246, 7.4.1.2 and 7.4.6).
"""

from __future__ import annotations

import datetime as dt
import functools
import os
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from OpenSSL._util import lib

from service.clientauth import (
    ClientIdentity,
    Decision,
    HandshakeFacts,
    Policy,
    VerifyResult,
    evaluate,
)
from service.tls import openssl_glue
from service.tls.context import new_server_context, verify_client_chains

HANDSHAKE_RECORD = 0x16
TLS12 = b"\x03\x03"
RECORD_PAYLOAD = 16384
CLIENT_HELLO, CERTIFICATE = 0x01, 0x0B
# ECDHE-ECDSA-AES128-GCM-SHA256 (the throwaway server key is P-256), and the SCSV that
# stands for the renegotiation_info extension
CIPHER_SUITES = b"\xc0\x2b\x00\xff"
EXTENSIONS = (
    b"\x00\x0a\x00\x06\x00\x04\x00\x17\x00\x1d"  # supported_groups: secp256r1, x25519
    b"\x00\x0b\x00\x02\x01\x00"  # ec_point_formats: uncompressed
    b"\x00\x0d\x00\x08\x00\x06\x04\x03\x08\x04\x04\x01"  # signature_algorithms
)


def _length(size: int, octets: int) -> bytes:
    return size.to_bytes(octets, "big")


def _records(handshake: bytes) -> bytes:
    return b"".join(
        bytes([HANDSHAKE_RECORD]) + TLS12 + _length(len(part), 2) + part
        for part in (handshake[start:start + RECORD_PAYLOAD]
                     for start in range(0, len(handshake), RECORD_PAYLOAD)))


def _handshake(kind: int, body: bytes) -> bytes:
    return bytes([kind]) + _length(len(body), 3) + body


def client_hello() -> bytes:
    body = (TLS12 + os.urandom(32) + b"\x00" + _length(len(CIPHER_SUITES), 2) + CIPHER_SUITES
            + b"\x01\x00" + _length(len(EXTENSIONS), 2) + EXTENSIONS)
    return _records(_handshake(CLIENT_HELLO, body))


def certificate_message(chain: Sequence[bytes]) -> bytes:
    entries = b"".join(_length(len(der), 3) + der for der in chain)
    return _records(_handshake(CERTIFICATE, _length(len(entries), 3) + entries))


_ANY_NAME = openssl_glue.server_name_check(())  # any server name will do


@functools.cache
def _server_identity() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A throwaway server certificate: the offline handshake needs one, nobody checks it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "omgate offline verifier")])
    now = dt.datetime.now(dt.UTC)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(days=1))
                   .not_valid_after(now + dt.timedelta(days=3650))
                   .sign(key, hashes.SHA256()))
    return certificate, key


def _context(policy: Policy, at: dt.datetime) -> SSL.Context:
    context = new_server_context()
    context.set_max_proto_version(SSL.TLS1_2_VERSION)
    certificate, key = _server_identity()
    context.use_certificate(certificate)
    context.use_privatekey(key)
    verify_client_chains(context, policy.anchors + policy.known_cas,
                         partial_chain=policy.trust_intermediates,
                         verify_depth=policy.verify_depth)
    lib.X509_VERIFY_PARAM_set_time(lib.SSL_CTX_get0_param(context._context),
                                   int(at.timestamp()))
    openssl_glue.install(context, verify_mode=SSL.VERIFY_PEER, server_names=_ANY_NAME)
    return context


def _drain(connection: SSL.Connection) -> None:
    """Discard what the server wrote (its hello, certificate and request)."""
    while True:
        try:
            connection.bio_read(RECORD_PAYLOAD)
        except SSL.WantReadError:
            return


def verify_results(chain: Sequence[x509.Certificate], policy: Policy,
                   at: dt.datetime) -> tuple[VerifyResult, ...] | None:
    """What OpenSSL's verify callback reports for ``chain`` (leaf first, as presented) under
    ``policy``'s trust and depth at the time ``at``; None when OpenSSL could not read the
    chain (then it has no opinion, and omgate's own findings say why)."""
    connection = SSL.Connection(_context(policy, at), None)
    state = openssl_glue.ConnectionState()
    connection.set_app_data(state)
    connection.set_accept_state()
    for message in (client_hello(),
                    certificate_message([c.public_bytes(Encoding.DER) for c in chain])):
        connection.bio_write(message)
        try:
            connection.do_handshake()
        except SSL.WantReadError:
            pass
        except SSL.Error:
            return None
        _drain(connection)
    return tuple(state.verify_results) if state.verify_results else None


def with_openssl_opinion(identity: ClientIdentity, policy: Policy,
                         at: dt.datetime) -> ClientIdentity:
    """``identity`` as the listener would have seen it: with OpenSSL's per-depth results,
    taken offline under ``policy``."""
    if not identity.chain or identity.unreadable or identity.oversized:
        return identity
    results = verify_results(identity.chain, policy, at)
    if results is None:
        return identity
    facts = HandshakeFacts(verify_results=results,
                           verified_under=policy.verification_digest)
    return ClientIdentity(identity.chain, identity.source, identity.peer, facts,
                          identity.ignored_headers, identity.unreadable,
                          identity.forwarded_format, known_sha256=identity.chain_sha256)


def evaluate_offline(identity: ClientIdentity, policy: Policy, now: dt.datetime) -> Decision:
    """The decision the listener would make on ``identity`` under ``policy`` at ``now``,
    OpenSSL's opinion included: what every tool that judges a chain outside a handshake
    reports."""
    return evaluate(with_openssl_opinion(identity, policy, now), policy, now)
