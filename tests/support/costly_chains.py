"""Chains built to cost a verifier CPU: huge RSA keys, huge exponents, look-alike names.

Shared by the tests and by ``make bench`` (its CPU-abuse row).
"""

from __future__ import annotations

import datetime as dt
import secrets

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from der_certificates import element

DAY = dt.timedelta(days=1)
HUGE_BITS = 16384
SIGNER = rsa.generate_private_key(65537, 2048)


def huge_rsa_key() -> rsa.RSAPublicKey:
    """A 16,384-bit RSA public key with a 64-bit public exponent, the largest OpenSSL
    checks a signature with (no private key: nobody needs to sign with it, only to make a
    verifier work)."""
    modulus = secrets.randbits(HUGE_BITS) | (1 << (HUGE_BITS - 1)) | 1
    exponent = secrets.randbits(64) | (1 << 63) | 1
    return rsa.RSAPublicNumbers(exponent, modulus).public_key()


def _name(text: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])


def with_junk_signature(certificate: x509.Certificate, size: int) -> x509.Certificate:
    """``certificate`` with its signature replaced by ``size`` random bytes: a verifier
    holding a key of that size must do the whole modular exponentiation to refuse it."""
    algorithm = (b"\x30\x0d\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x01\x0b"
                 b"\x05\x00")  # sha256WithRSAEncryption
    signature = b"\x00" + bytes([secrets.randbits(7)]) + secrets.token_bytes(size - 1)
    body = certificate.tbs_certificate_bytes + algorithm + element(0x03, signature)
    return x509.load_der_x509_certificate(element(0x30, body))


def junk_cas(count: int, first: x509.Name, signer: rsa.RSAPrivateKey | None = None,
             key: rsa.RSAPublicKey | None = None) -> list[x509.Certificate]:
    """``count`` CA certificates all named ``first`` (a leaf's issuer) and issued by that
    name, so each is a candidate issuer of the leaf and of each other, all with one huge
    RSA key and signatures that verify under none of them."""
    signer = signer or SIGNER  # any RSA key: its signature is replaced
    key = key or huge_rsa_key()
    now = dt.datetime.now(dt.UTC)
    certificates = []
    for _ in range(count):
        builder = (x509.CertificateBuilder().subject_name(first)
                   .issuer_name(first).public_key(key)
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - DAY).not_valid_after(now + 365 * DAY)
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None),
                                  critical=True))
        certificates.append(with_junk_signature(builder.sign(signer, hashes.SHA256()),
                                                HUGE_BITS // 8))
    return certificates


def look_alikes(count: int) -> list[x509.Certificate]:
    """``count`` self-issued certificates under one name, each signed by another key: a
    path builder that tries every pair checks count² signatures."""
    now = dt.datetime.now(dt.UTC)
    certificates = []
    for _ in range(count):
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (x509.CertificateBuilder().subject_name(_name("Look-alike CA"))
                   .issuer_name(_name("Look-alike CA")).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - DAY).not_valid_after(now + 365 * DAY)
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None),
                                  critical=True))
        certificates.append(builder.sign(ec.generate_private_key(ec.SECP256R1()),
                                         hashes.SHA256()))
    return certificates


def _ca_extensions(builder: x509.CertificateBuilder,
                   key: ec.EllipticCurvePrivateKey) -> x509.CertificateBuilder:
    return (builder.add_extension(x509.BasicConstraints(ca=True, path_length=None),
                                  critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                         False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False))


def constrained_root(subtrees: int) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A self-made root whose name constraints permit and exclude ``subtrees`` DNS names
    each (about 20 bytes a subtree): a verifier comparing every name with every subtree
    does names x 2 x subtrees comparisons."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    constraints = x509.NameConstraints(
        [x509.DNSName(f"p{index}.permitted.example") for index in range(subtrees)],
        [x509.DNSName(f"x{index}.excluded.example") for index in range(subtrees)])
    builder = (x509.CertificateBuilder().subject_name(_name("Constrained root"))
               .issuer_name(_name("Constrained root")).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - DAY).not_valid_after(now + 365 * DAY)
               .add_extension(constraints, critical=True))
    return _ca_extensions(builder, key).sign(key, hashes.SHA256()), key


def many_named_leaf(root: x509.Certificate, root_key: ec.EllipticCurvePrivateKey,
                    names: int) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A client certificate with ``names`` DNS names under ``root``, with a fresh serial
    each time (so no cache of decisions has seen it)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder().subject_name(_name("Many names"))
               .issuer_name(root.subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - DAY).not_valid_after(now + 30 * DAY)
               .add_extension(x509.SubjectAlternativeName(
                   [x509.DNSName(f"h{index}.permitted.example") for index in range(names)]),
                   critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   root_key.public_key()), critical=False)
               .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]),
                              critical=False))
    return builder.sign(root_key, hashes.SHA256()), key
