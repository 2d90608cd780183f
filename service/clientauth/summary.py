"""Certificate summaries, the shape every log line and tool output uses."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from service.clientauth.dn import shown_name
from service.clientauth.extensions import oid_name, optional_extension
from service.text import clipped


def fingerprint(certificate: x509.Certificate) -> str:
    return hashlib.sha256(certificate.public_bytes(Encoding.DER)).hexdigest()


def spki_sha256(certificate: x509.Certificate) -> str:
    """Base64 SHA-256 of the SubjectPublicKeyInfo (Envoy's and HPKP's pin format)."""
    spki = certificate.public_key().public_bytes(Encoding.DER,
                                                 PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def describe_key(certificate: x509.Certificate) -> str:
    try:
        key = certificate.public_key()
    except (ValueError, TypeError) as error:  # unsupported algorithms still get a summary
        return f"unsupported ({error})"
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size}"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC {key.curve.name}"
    if isinstance(key, dsa.DSAPublicKey):
        return f"DSA {key.key_size}"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519"
    if isinstance(key, ed448.Ed448PublicKey):
        return "Ed448"
    return type(key).__name__


def signature_algorithm(certificate: x509.Certificate) -> str:
    return oid_name(certificate.signature_algorithm_oid)


def subject_alternative_names(certificate: x509.Certificate) -> list[str]:
    alternative = optional_extension(certificate, x509.SubjectAlternativeName)
    if alternative is None:
        return []
    names = [f"DNS:{name}" for name in alternative.get_values_for_type(x509.DNSName)]
    names += [f"IP:{address}" for address in alternative.get_values_for_type(x509.IPAddress)]
    names += [f"URI:{uri}" for uri in alternative.get_values_for_type(
        x509.UniformResourceIdentifier)]
    names += [f"email:{mail}" for mail in alternative.get_values_for_type(x509.RFC822Name)]
    return names


def is_ca(certificate: x509.Certificate) -> bool:
    constraints = optional_extension(certificate, x509.BasicConstraints)
    return constraints is not None and constraints.ca


def days_left(certificate: x509.Certificate, now: dt.datetime) -> int:
    """Whole days until notAfter, counted toward zero (-3 means it expired 3 days ago)."""
    return int((certificate.not_valid_after_utc - now).total_seconds() / 86400)


def validity_words(days: int) -> str:
    """A days_left count in words: "12 days left", "expired 5 days ago" (0: within a day of
    its expiry, on either side)."""
    if days < 0:
        return f"expired {-days} day{'s' * (days != -1)} ago"
    if days == 0:
        return "less than a day from its expiry"
    return f"{days} day{'s' * (days != 1)} left"


SHOWN_SANS = 16  # of a certificate's subjectAltNames in its summary: the rest are counted


def _shown_sans(names: list[str]) -> list[str]:
    """Names as a summary shows them: a client chooses how many and how long (every
    decision line holds a new chain's summary, and JSON writes a control character as six)."""
    shown = [clipped(name) for name in names[:SHOWN_SANS]]
    if len(names) > SHOWN_SANS:
        shown.append(f"... ({len(names) - SHOWN_SANS} more)")
    return shown


def summarize(certificate: x509.Certificate, now: dt.datetime | None = None) -> dict[str, Any]:
    """A certificate's facts for people (a decision line, check, inspect, probe): names
    clipped to SHOWN_CHARACTERS, at most SHOWN_SANS alternative names."""
    now = now or dt.datetime.now(dt.UTC)
    return {
        "subject": clipped(shown_name(certificate.subject)),
        "issuer": clipped(shown_name(certificate.issuer)),
        "serial": format(certificate.serial_number, "x"),
        "not_before": certificate.not_valid_before_utc.isoformat(),
        "not_after": certificate.not_valid_after_utc.isoformat(),
        "days_left": days_left(certificate, now),
        "sha256": fingerprint(certificate),
        "spki_sha256": spki_sha256(certificate),
        "sans": _shown_sans(subject_alternative_names(certificate)),
        "key": describe_key(certificate),
        "signature_algorithm": signature_algorithm(certificate),
        "is_ca": is_ca(certificate),
    }
