"""Public keys judged by size: too weak to trust, or too costly to check a signature with.

Any client can present a chain; the keys in it decide what each signature check costs
(an RSA verification grows with the modulus and the public exponent). Keys beyond these
limits are refused before a single signature is checked.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

MIN_RSA_BITS = 2048
MIN_EC_BITS = 256
MAX_RSA_BITS = 8192
MAX_DSA_BITS = 3072
# Public exponents in use are 3, 17 and 65537; anything far larger only makes checks slow.
MAX_RSA_EXPONENT = 2**32 + 1


def _public_key(certificate: x509.Certificate) -> CertificatePublicKeyTypes | None:
    try:
        return certificate.public_key()
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return None


def costly_key(certificate: x509.Certificate) -> str | None:
    """Why checking signatures with this certificate's key would cost too much, or None."""
    key = _public_key(certificate)
    if isinstance(key, rsa.RSAPublicKey):
        exponent = key.public_numbers().e
        if key.key_size > MAX_RSA_BITS:
            return f"a {key.key_size}-bit RSA key (omgate checks up to {MAX_RSA_BITS} bits)"
        if exponent % 2 == 0 or not 3 <= exponent <= MAX_RSA_EXPONENT:
            return (f"an RSA public exponent of {exponent.bit_length()} bits (omgate accepts "
                    "small odd exponents such as 65537)")
    if isinstance(key, dsa.DSAPublicKey) and key.key_size > MAX_DSA_BITS:
        return f"a {key.key_size}-bit DSA key (omgate checks up to {MAX_DSA_BITS} bits)"
    return None


def weak_key(certificate: x509.Certificate) -> str | None:
    """What makes this certificate's key too weak to sign with, or None."""
    key = _public_key(certificate)
    if isinstance(key, rsa.RSAPublicKey | dsa.DSAPublicKey) and key.key_size < MIN_RSA_BITS:
        return f"a {key.key_size}-bit {'RSA' if isinstance(key, rsa.RSAPublicKey) else 'DSA'} key"
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.key_size < MIN_EC_BITS:
        return f"a {key.curve.key_size}-bit elliptic-curve key"
    return None
