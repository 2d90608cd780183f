"""Distinguished names: parse the three spellings operators paste, compare as RFC 4518 says.

Accepted spellings, all meaning attributes *in certificate order* once parsed:

- RFC 4514, ``CN=a,O=b,C=US`` (most specific first: reversed from the certificate);
- OpenSSL's one-line form, ``/C=US/O=VeriSign, Inc./OU=...`` (certificate order), where a
  value may itself contain ``/`` and ``,``;
- OpenSSL's ``-nameopt`` comma form, ``C = US, O = "VeriSign, Inc.", CN = a``
  (certificate order, `` = `` between type and value, quoted values).

Values compare as RFC 4518 prescribes for caseIgnoreMatch: Unicode NFKC, case folded,
leading and trailing spaces dropped and inner runs of spaces collapsed to one.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from cryptography import x509

from service.text import split_unquoted

# Attribute type names (lower case) and the OIDs they stand for.
ATTRIBUTE_OIDS = {
    "c": "2.5.4.6", "countryname": "2.5.4.6",
    "st": "2.5.4.8", "s": "2.5.4.8", "stateorprovincename": "2.5.4.8",
    "l": "2.5.4.7", "localityname": "2.5.4.7",
    "o": "2.5.4.10", "organizationname": "2.5.4.10",
    "ou": "2.5.4.11", "organizationalunitname": "2.5.4.11",
    "cn": "2.5.4.3", "commonname": "2.5.4.3",
    "street": "2.5.4.9", "streetaddress": "2.5.4.9",
    "sn": "2.5.4.4", "surname": "2.5.4.4",
    "gn": "2.5.4.42", "givenname": "2.5.4.42",
    "serialnumber": "2.5.4.5",
    "title": "2.5.4.12",
    "postalcode": "2.5.4.17",
    "businesscategory": "2.5.4.15",
    "dc": "0.9.2342.19200300.100.1.25", "domaincomponent": "0.9.2342.19200300.100.1.25",
    "uid": "0.9.2342.19200300.100.1.1", "userid": "0.9.2342.19200300.100.1.1",
    "emailaddress": "1.2.840.113549.1.9.1", "email": "1.2.840.113549.1.9.1",
    "e": "1.2.840.113549.1.9.1",
    "jurisdictionc": "1.3.6.1.4.1.311.60.2.1.3",
    "jurisdictioncountryname": "1.3.6.1.4.1.311.60.2.1.3",
    "jurisdictionst": "1.3.6.1.4.1.311.60.2.1.2",
    "jurisdictionl": "1.3.6.1.4.1.311.60.2.1.1",
    "organizationidentifier": "2.5.4.97",
}
_OID = re.compile(r"^\d+(\.\d+)+$")
_SLASH_BOUNDARY = re.compile(r"/(?=\s*([A-Za-z][A-Za-z0-9-]*|\d+(?:\.\d+)+)\s*=)")


class DnSyntaxError(ValueError):
    """The text is not a distinguished name in any accepted spelling."""


Attribute = tuple[str, str]  # (OID, normalised value)
Rdn = frozenset[Attribute]


@dataclass(frozen=True)
class DistinguishedName:
    """RDNs in certificate order, each a set of normalised (OID, value) attributes."""

    rdns: tuple[Rdn, ...]
    text: str = ""

    def matches(self, name: x509.Name) -> bool:
        return self.rdns == from_name(name).rdns

    def matches_reversed(self, name: x509.Name) -> bool:
        return tuple(reversed(self.rdns)) == from_name(name).rdns


def normalise_value(value: str) -> str:
    value = unicodedata.normalize("NFKC", value).casefold()
    return " ".join(value.split())


def _oid_for(attribute_type: str) -> str:
    cleaned = attribute_type.strip()
    if cleaned.lower().startswith("oid."):
        cleaned = cleaned[4:]
    if _OID.match(cleaned):
        return cleaned
    oid = ATTRIBUTE_OIDS.get(cleaned.lower())
    if oid is None:
        raise DnSyntaxError(f"unknown attribute type {attribute_type.strip()!r}")
    return oid


def _attribute(attribute_type: str, value: str) -> Attribute:
    return (_oid_for(attribute_type), normalise_value(value))


# RDNs shown of a name: real names have a handful, and a client may send thousands.
SHOWN_RDNS = 16


def shown_name(name: x509.Name) -> str:
    """A name as RFC 4514 writes it (most specific first), its most specific SHOWN_RDNS
    RDNs only: the rest are counted, not written."""
    rdns = name.rdns
    if len(rdns) <= SHOWN_RDNS:
        return name.rfc4514_string()
    kept = x509.Name(rdns[-SHOWN_RDNS:]).rfc4514_string()
    return f"{kept},... ({len(rdns) - SHOWN_RDNS} more RDNs)"


def from_name(name: x509.Name) -> DistinguishedName:
    rdns = tuple(
        frozenset((attribute.oid.dotted_string, normalise_value(str(attribute.value)))
                  for attribute in rdn)
        for rdn in name.rdns
    )
    return DistinguishedName(rdns)


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    try:
        return split_unquoted(text, separator)
    except ValueError as error:
        raise DnSyntaxError(str(error)) from None


def _unescape(value: str) -> str:
    """Undo quoting and backslash escapes, including RFC 4514's hex pairs (``\\2C``)."""
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    out = bytearray()
    index = 0
    while index < len(value):
        character = value[index]
        if character == "\\" and index + 1 < len(value):
            pair = value[index + 1:index + 3]
            if re.fullmatch(r"[0-9A-Fa-f]{2}", pair):
                out.append(int(pair, 16))
                index += 3
                continue
            out += value[index + 1].encode()
            index += 2
            continue
        out += character.encode()
        index += 1
    return out.decode("utf-8", errors="replace")


def _pair(text: str) -> Attribute:
    attribute_type, sep, value = text.partition("=")
    if not sep or not attribute_type.strip():
        raise DnSyntaxError(f"{text.strip()!r} is not TYPE=value")
    return _attribute(attribute_type, _unescape(value))


def _split_plus(item: str) -> list[str]:
    """Split a multi-valued RDN on a '+' that starts another TYPE=value."""
    parts = re.split(r"(?<!\\)\s*\+\s*(?=[A-Za-z][A-Za-z0-9-]*\s*=|\d+(?:\.\d+)+\s*=)", item)
    return [part for part in parts if part.strip()]


def _rdns(items: list[str]) -> tuple[Rdn, ...]:
    return tuple(frozenset(_pair(part) for part in _split_plus(item)) for item in items)


def _slash_items(text: str) -> list[str]:
    """``/C=US/O=VeriSign, Inc./OU=a/b`` -> ``C=US``, ``O=VeriSign, Inc.``, ``OU=a/b``."""
    starts = [match.start() for match in _SLASH_BOUNDARY.finditer(text)]
    if not starts or starts[0] != 0:
        raise DnSyntaxError("a one-line name starts with /TYPE=")
    bounds = [*starts, len(text)]
    return [text[bounds[i] + 1:bounds[i + 1]] for i in range(len(starts))]


def parse_dn(text: str) -> DistinguishedName:
    """Parse any accepted spelling into RDNs in certificate order."""
    stripped = text.strip()
    if not stripped:
        raise DnSyntaxError("empty distinguished name")
    if stripped.startswith("/"):
        rdns = _rdns(_slash_items(stripped))
    elif re.search(r"\s=\s", stripped):  # OpenSSL's "C = US, O = ..." (certificate order)
        rdns = _rdns(_split_outside_quotes(stripped, ","))
    else:  # RFC 4514 lists the most specific RDN first: reverse into certificate order
        rdns = tuple(reversed(_rdns(_split_outside_quotes(stripped, ","))))
    if not rdns:
        raise DnSyntaxError("no attributes")
    return DistinguishedName(rdns, stripped)
