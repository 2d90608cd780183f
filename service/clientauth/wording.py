"""How findings name certificates: by position as presented and subject, or by origin."""

from __future__ import annotations

import datetime as dt

from cryptography import x509

from service.clientauth.chain import Link


def subject_of(certificate: x509.Certificate) -> str:
    return certificate.subject.rfc4514_string() or "(empty subject)"


def describe(link: Link) -> str:
    if link.index is None:
        origin = "trust anchor" if link.origin == "anchor" else "configured CA"
        return f"the {origin} {subject_of(link.certificate)}"
    return f"certificate {link.index} ({subject_of(link.certificate)})"


def capitalized(text: str) -> str:
    """``text`` with its first letter in upper case (and the rest as it is), to open a
    sentence."""
    return text[:1].upper() + text[1:]


def sentence_start(link: Link) -> str:
    """``describe`` capitalised, to open a sentence."""
    return capitalized(describe(link))


def date(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")
