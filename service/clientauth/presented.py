"""A presented chain as data: the certificates in the order sent, and those that cannot be
read, each in its place. The same value whether the chain arrived in omgate's own TLS
handshake or in a header from a trusted proxy."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from service.clientauth.dn import shown_name
from service.clientauth.extensions import certificate_problem
from service.clientauth.model import (
    MAX_JUDGED_BYTES,
    ClientIdentity,
    HandshakeFacts,
    Source,
    UnreadableCertificate,
    chain_fingerprint,
)

MAX_PRESENTED_CERTIFICATES = 20
# Distinct chains read recently, kept parsed for senders that reconnect: only chains of at
# most CHAIN_KEPT_BYTES (a real sender's is 2 to 6 KiB), so that what any client may present
# before anything is decided pins at most a few MiB.
CHAINS_KEPT = 256
CHAIN_KEPT_BYTES = 16 * 1024
NOT_READ = b"\x00not read"  # stands for those presented beyond the limit (never DER)


@dataclass(frozen=True)
class PresentedChain:
    """A presented chain: readable certificates and the ones that are not."""

    certificates: tuple[x509.Certificate, ...]
    unreadable: tuple[UnreadableCertificate, ...] = ()

    # Computed once per value: a chain presented again is the same value (load_chain).
    @functools.cached_property
    def sha256(self) -> str:
        """The chain's fingerprint, as the identity built from it has it ("" for none)."""
        return chain_fingerprint(self.certificates, self.unreadable)

    @functools.cached_property
    def pem(self) -> tuple[str, ...]:
        """The readable certificates as PEM, in the order sent."""
        return tuple(certificate.public_bytes(Encoding.PEM).decode()
                     for certificate in self.certificates)

    @functools.cached_property
    def leaf_subject(self) -> str | None:
        """The leaf's subject as shown (none for a chain too large to be read)."""
        if not self.certificates or self.identity("tls", None).oversized:
            return None
        return shown_name(self.certificates[0].subject)

    def identity(self, source: Source, peer: str | None,
                 facts: HandshakeFacts | None = None, *,
                 forwarded_format: str | None = None) -> ClientIdentity:
        return ClientIdentity(self.certificates, source, peer, facts, unreadable=self.unreadable,
                              forwarded_format=forwarded_format, known_sha256=self.sha256)


NOTHING_PRESENTED = PresentedChain(())


def unreadable_chain(data: bytes, reason: str) -> PresentedChain:
    """What could not be read at all (a forwarded header), kept as one unreadable entry."""
    return PresentedChain((), (UnreadableCertificate(0, data, reason),))


def _load(index: int, der: bytes, *, judged: bool) -> x509.Certificate | UnreadableCertificate:
    if der == NOT_READ:
        return UnreadableCertificate(index, der, f"only the first {MAX_PRESENTED_CERTIFICATES}"
                                     " presented certificates are read")
    # OpenSSL accepts encodings (a BOOLEAN of 0x01, say) the stricter parser refuses; such a
    # certificate must stay in the chain as unreadable, never silently vanish from it.
    try:
        certificate = x509.load_der_x509_certificate(der)
    except (ValueError, x509.InvalidVersion) as error:
        return UnreadableCertificate(index, der, str(error))
    # cryptography reads names and extensions when first asked: read them now, unless the
    # chain is too large to be judged (then nothing beyond its outer structure is read)
    problem = certificate_problem(certificate) if judged else None
    return certificate if problem is None else UnreadableCertificate(index, der, problem)


def load_chain(presented_der: Sequence[bytes]) -> PresentedChain:
    """The chain as data; a chain presented before (a sender reconnecting) is the same value,
    read once: its certificates are parsed, and held in memory, once for all connections.
    A chain larger than CHAIN_KEPT_BYTES is read for its connection alone."""
    presented = tuple(presented_der)
    if sum(map(len, presented)) > CHAIN_KEPT_BYTES:
        return _read_chain(presented)
    return _kept_chain(presented)


def load_chain_to_show(presented_der: Sequence[bytes]) -> PresentedChain:
    """A recorded chain as the console and the tools show it: every certificate's names and
    extensions read, whatever the chain's size. A chain too large to be judged was refused
    and recorded without being read; a name of it that cannot be read makes its certificate
    unreadable here, where showing it would otherwise fail."""
    presented = tuple(presented_der)
    if sum(map(len, presented)) <= MAX_JUDGED_BYTES:
        return load_chain(presented)
    return _read_chain(presented, judged=True)


def _read_chain(presented_der: tuple[bytes, ...], judged: bool | None = None) -> PresentedChain:
    if judged is None:
        judged = sum(map(len, presented_der)) <= MAX_JUDGED_BYTES
    loaded = [_load(index, der, judged=judged) for index, der in enumerate(presented_der)]
    return PresentedChain(
        tuple(item for item in loaded if isinstance(item, x509.Certificate)),
        tuple(item for item in loaded if isinstance(item, UnreadableCertificate)),
    )


_kept_chain = functools.lru_cache(maxsize=CHAINS_KEPT)(_read_chain)


