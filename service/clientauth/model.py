"""Values the policy engine reads and writes: identities, policies, findings, decisions.

A client certificate chain is data: whether it arrived in omgate's own TLS
handshake or in a header from a trusted proxy, it becomes a
:class:`ClientIdentity` and goes through the same pure policy function.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
from dataclasses import InitVar, dataclass, field
from typing import Any, Literal, get_args

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from service.clientauth.dn import DistinguishedName
from service.clientauth.pins import Pin

Severity = Literal["error", "warning", "info"]
# "unproven": the chain arrived, but the handshake did not complete, so the client never
# proved it holds the key; such a decision never counts as an acceptance.
Outcome = Literal["accept", "reject", "unproven"]
Source = Literal["tls", "forwarded"]
Mode = Literal["off", "request", "optional", "require"]
MODES: tuple[Mode, ...] = get_args(Mode)
# Every finding code omgate writes: stable names, documented in the README and DESIGN.md.
FindingCode = Literal[
    "no_client_cert", "chain_out_of_order", "missing_intermediate", "untrusted_root",
    "self_signed", "expired", "not_yet_valid", "depth_exceeded", "bad_signature",
    "pin_mismatch", "issuer_dn_mismatch", "subject_dn_mismatch", "name_not_allowed",
    "missing_client_auth_eku", "revoked", "weak_signature_algorithm", "root_included",
    "duplicate_certificate", "unrelated_certificate", "expires_soon",
    "forwarded_from_untrusted_peer", "unreadable_certificate", "issuer_not_a_ca",
    "path_length_exceeded", "name_constraints_violated", "unknown_critical_extension",
    "path_validation_failed", "unsupported_key", "chain_too_costly", "key_identifier_mismatch",
    # the server's own chain (omgate check, omgate probe) and the configuration
    "hostname_mismatch", "key_mismatch", "not_publicly_trusted", "missing_server_auth_eku",
    "config_conflict",
]
FINDING_CODES: tuple[FindingCode, ...] = get_args(FindingCode)


@dataclass(frozen=True)
class Finding:
    """One thing the analysis noticed. ``cert`` indexes the chain as presented (0 = leaf)."""

    code: FindingCode
    severity: Severity
    cert: int | None
    message: str
    hint: str

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "severity": self.severity, "cert": self.cert,
                "message": self.message, "hint": self.hint}


@dataclass(frozen=True)
class VerifyResult:
    """One call of OpenSSL's verify callback: what it thought of the certificate at ``depth``."""

    depth: int
    error: int
    error_text: str
    subject: str

    def to_json(self) -> dict[str, Any]:
        return {"depth": self.depth, "error": self.error, "error_text": self.error_text,
                "subject": self.subject}


@dataclass(frozen=True)
class HandshakeFacts:
    tls_version: str | None = None
    cipher: str | None = None
    sni: str | None = None
    alpn: str | None = None
    resumed: bool = False
    advertised_ca_names: tuple[str, ...] = ()
    verify_results: tuple[VerifyResult, ...] = ()
    # Policy.verification_digest of the settings OpenSSL verified with (the listener's).
    verified_under: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "tls_version": self.tls_version, "cipher": self.cipher, "sni": self.sni,
            "alpn": self.alpn, "resumed": self.resumed,
            "advertised_ca_names": list(self.advertised_ca_names),
            "verify_results": [result.to_json() for result in self.verify_results],
        }


@dataclass(frozen=True)
class UnreadableCertificate:
    """A presented certificate that cannot be parsed; ``index`` is its place as presented."""

    index: int
    der: bytes
    reason: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.der).hexdigest()


def in_presented_order(chain: tuple[x509.Certificate, ...],
                       unreadable: tuple[UnreadableCertificate, ...] = ()
                       ) -> list[x509.Certificate | UnreadableCertificate]:
    """Every presented certificate in presented order, unreadable ones in their place."""
    readable = iter(chain)
    by_index = {item.index: item for item in unreadable}
    return [by_index.get(index) or next(readable)
            for index in range(len(chain) + len(unreadable))]


def _der(item: x509.Certificate | UnreadableCertificate) -> bytes:
    return item.der if isinstance(item, UnreadableCertificate) else item.public_bytes(Encoding.DER)


# Bytes of certificates a decision reads: parsing is most of what judging a chain costs
# (about 0.5 ms a KiB for a certificate of many names), and any client can present 100 KiB.
# A real sender's chain is 2 to 8 KiB.
MAX_JUDGED_BYTES = 32 * 1024


# What a fingerprint of a chain with an unreadable entry starts with: no certificate's DER
# does (each is a SEQUENCE, 0x30), so it never hashes the same bytes as a readable chain.
_WITH_UNREADABLE = b"\x00omgate chain with unreadable entries\x00"


def chain_fingerprint(chain: tuple[x509.Certificate, ...],
                      unreadable: tuple[UnreadableCertificate, ...] = ()) -> str:
    """SHA-256 over the presented chain's DER, in order: equal chains, equal fingerprints.

    Readable certificates run together split one way only (each DER says its length). An
    unreadable entry does not: one holding a whole chain's DER hashed as that chain and
    took its cached verdict. A chain with one is hashed apart, each entry with its
    readability and length."""
    if not chain and not unreadable:
        return ""
    digest = hashlib.sha256()
    if not unreadable:
        for certificate in chain:
            digest.update(certificate.public_bytes(Encoding.DER))
        return digest.hexdigest()
    digest.update(_WITH_UNREADABLE)
    for item in in_presented_order(chain, unreadable):
        der = _der(item)
        readable = b"U" if isinstance(item, UnreadableCertificate) else b"C"
        digest.update(readable + len(der).to_bytes(8, "big") + der)
    return digest.hexdigest()


@dataclass(frozen=True)
class ClientIdentity:
    """A presented chain: ``chain`` holds the readable certificates in presented order,
    ``unreadable`` the ones that could not be parsed (each knows its presented index)."""

    chain: tuple[x509.Certificate, ...]
    source: Source
    peer: str | None = None
    handshake: HandshakeFacts | None = None
    # Forwarded headers that came from a peer not in server.trusted_proxies (and were dropped).
    ignored_headers: tuple[str, ...] = ()
    unreadable: tuple[UnreadableCertificate, ...] = ()
    # The client_auth.forwarded_cert format a trusted proxy's headers were read in (None:
    # nothing was read from a trusted proxy); hints about a missing certificate name it.
    forwarded_format: str | None = None
    # The chain's fingerprint when the caller has it (PresentedChain computes it once).
    known_sha256: InitVar[str | None] = None
    chain_sha256: str = field(init=False)

    def __post_init__(self, known_sha256: str | None) -> None:
        object.__setattr__(self, "chain_sha256",
                           known_sha256 or chain_fingerprint(self.chain, self.unreadable))

    @property
    def presented(self) -> bool:
        return bool(self.chain or self.unreadable)

    @property
    def presented_bytes(self) -> int:
        return sum(len(_der(item)) for item in in_presented_order(self.chain, self.unreadable))

    @property
    def oversized(self) -> bool:
        """Larger than a decision reads: judged chain_too_costly without being parsed."""
        return self.presented_bytes > MAX_JUDGED_BYTES


def verification_digest(trusted: tuple[x509.Certificate, ...], partial_chain: bool,
                        verify_depth: int) -> str:
    digest = hashlib.sha256(f"{partial_chain}:{verify_depth}".encode())
    for der in sorted({certificate.public_bytes(Encoding.DER) for certificate in trusted}):
        digest.update(hashlib.sha256(der).digest())
    return digest.hexdigest()


@dataclass(frozen=True)
class Policy:
    """The rules one decision is made under, built from ``[client_auth]`` by the caller.

    ``anchors`` are the self-signed certificates of ``trust`` (and, with
    ``trust_intermediates``, the others too); ``known_cas`` are the other certificates of
    ``trust``, usable to complete a path but not to end it.
    """

    mode: Mode = "request"
    anchors: tuple[x509.Certificate, ...] = ()
    known_cas: tuple[x509.Certificate, ...] = ()
    trust_intermediates: bool = False
    verify_depth: int = 2
    pins: tuple[Pin, ...] = ()
    issuer_dn: DistinguishedName | None = None
    subject_dn: DistinguishedName | None = None
    allowed_names: tuple[str, ...] = ()
    require_client_auth_eku: bool = False
    crls: tuple[x509.CertificateRevocationList, ...] = ()
    clock_skew: dt.timedelta = dt.timedelta(seconds=300)
    expiry_warning_days: int = 30
    reject_weak_signatures: bool = True

    @property
    def enforced(self) -> bool:
        return self.mode in ("optional", "require")

    @property
    def trust_required(self) -> bool:
        """Without anchors, pins alone decide (Envoy's verify_certificate_hash)."""
        return bool(self.anchors) or not self.pins

    @functools.cached_property
    def verification_digest(self) -> str:
        """What OpenSSL's verdict depends on: the trusted certificates, whether they may end
        a path, the depth. Equal digests: OpenSSL verified under these same settings."""
        return verification_digest(self.anchors + self.known_cas, self.trust_intermediates,
                                   self.verify_depth)


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    findings: tuple[Finding, ...]

    @property
    def accepted(self) -> bool:
        return self.outcome == "accept"
