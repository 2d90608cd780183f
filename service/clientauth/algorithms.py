"""Signature algorithms that no longer protect a signature, by cryptography's OIDs."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import SignatureAlgorithmOID

# cryptography names no OID for these two any more: their digests are long broken.
MD2_WITH_RSA = x509.ObjectIdentifier("1.2.840.113549.1.1.2")
MD4_WITH_RSA = x509.ObjectIdentifier("1.2.840.113549.1.1.3")

WEAK_SIGNATURES: dict[x509.ObjectIdentifier, str] = {
    MD2_WITH_RSA: "MD2",
    MD4_WITH_RSA: "MD4",
    SignatureAlgorithmOID.RSA_WITH_MD5: "MD5",
    SignatureAlgorithmOID.RSA_WITH_SHA1: "SHA-1",
    SignatureAlgorithmOID._RSA_WITH_SHA1: "SHA-1",  # the OIW spelling
    SignatureAlgorithmOID.ECDSA_WITH_SHA1: "SHA-1",
    SignatureAlgorithmOID.DSA_WITH_SHA1: "SHA-1",
}

# Weak signatures cryptography no longer checks in verify_directly_issued_by, but which
# can still be checked here (and are then reported as weak).
LEGACY_DIGESTS: dict[x509.ObjectIdentifier, type[hashes.HashAlgorithm]] = {
    SignatureAlgorithmOID.RSA_WITH_SHA1: hashes.SHA1,
    SignatureAlgorithmOID._RSA_WITH_SHA1: hashes.SHA1,
    SignatureAlgorithmOID.RSA_WITH_MD5: hashes.MD5,
    SignatureAlgorithmOID.ECDSA_WITH_SHA1: hashes.SHA1,
}


def weak_signature(certificate: x509.Certificate) -> str | None:
    """The broken digest of the certificate's signature (``"SHA-1"``), or None."""
    return WEAK_SIGNATURES.get(certificate.signature_algorithm_oid)
