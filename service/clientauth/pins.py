"""Certificate and key pins: ``sha256:<hex>`` (colons optional) and ``spki:<base64>`` (Envoy)."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Literal

from cryptography import x509

from service.clientauth.summary import fingerprint, spki_sha256

PinKind = Literal["sha256", "spki"]


class PinSyntaxError(ValueError):
    pass


@dataclass(frozen=True)
class Pin:
    kind: PinKind
    value: str  # lower-case hex for sha256, base64 for spki
    source: str = ""  # where it came from (a pin string, or a pin file), for messages

    def matches(self, certificate: x509.Certificate) -> bool:
        if self.kind == "sha256":
            return fingerprint(certificate) == self.value
        return spki_sha256(certificate) == self.value

    def __str__(self) -> str:
        return f"{self.kind}:{self.value}"


def parse_pin(text: str) -> Pin:
    kind, sep, value = text.strip().partition(":")
    kind = kind.lower()
    if not sep or kind not in ("sha256", "spki"):
        raise PinSyntaxError(f'{text!r}: a pin is "sha256:<hex>" or "spki:<base64>"')
    if kind == "sha256":
        digits = value.replace(":", "").strip().lower()
        if len(digits) != 64 or any(c not in "0123456789abcdef" for c in digits):
            raise PinSyntaxError(f"{text!r}: a sha256 pin has 64 hex digits (colons optional)")
        return Pin("sha256", digits, text)
    try:
        digest = base64.b64decode(value.strip(), validate=True)
    except binascii.Error:
        raise PinSyntaxError(f"{text!r}: an spki pin is base64") from None
    if len(digest) != 32:
        raise PinSyntaxError(f"{text!r}: an spki pin is the base64 of a 32-byte SHA-256")
    return Pin("spki", base64.b64encode(digest).decode(), text)


def pin_for_certificate(certificate: x509.Certificate, source: str) -> Pin:
    """An exact-certificate pin (Apache's ``SSL_CLIENT_CERT eq file(...)``)."""
    return Pin("sha256", fingerprint(certificate), source)
