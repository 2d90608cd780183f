"""Envoy's ``X-Forwarded-Client-Cert`` header, read strictly, sans-IO.

The header is elements separated by ``,`` (one per proxy, the nearest last), each of
``Key=value`` pairs separated by ``;``. A value holding ``,`` ``;`` or ``=`` is
double-quoted, with ``\\"`` for a quote inside. Envoy writes its pairs in one order:
``By``, ``Hash``, ``Cert``, ``Chain``, ``Subject``, ``URI``, ``DNS``.

Envoy does not quote ``URI`` and ``DNS``, the client certificate's own names: a
certificate whose name holds ``,`` or ``;`` writes whatever pairs and elements it likes
after them. So nothing may follow the first ``URI`` or ``DNS`` pair but more of them:
another key, or another element, could have been written by the client. Anything else
that cannot be read one way only is refused too; nothing is guessed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

XfccKey = Literal["by", "hash", "cert", "chain", "subject", "uri", "dns"]
SPELLING: dict[XfccKey, str] = {"by": "By", "hash": "Hash", "cert": "Cert", "chain": "Chain",
                                "subject": "Subject", "uri": "URI", "dns": "DNS"}
REPEATABLE: frozenset[XfccKey] = frozenset({"by", "uri", "dns"})  # one pair per name
CERTIFICATE_NAMES: frozenset[XfccKey] = frozenset({"uri", "dns"})  # written unquoted
_KEYS: dict[str, XfccKey] = {key: key for key in SPELLING}
MUST_BE_QUOTED = frozenset('="\\')  # ',' and ';' end an unquoted value; '\\' escapes
HEADER = "X-Forwarded-Client-Cert"


class XfccSyntaxError(ValueError):
    """A header that cannot be read one way only; the message says where and why."""


@dataclass(frozen=True)
class XfccPair:
    key: XfccKey
    value: str  # unquoted and unescaped


@dataclass(frozen=True)
class XfccElement:
    pairs: tuple[XfccPair, ...]

    def values(self, key: XfccKey) -> tuple[str, ...]:
        return tuple(pair.value for pair in self.pairs if pair.key == key)

    def value(self, key: XfccKey) -> str | None:
        """The one value of a key that appears at most once (checked when parsed)."""
        found = self.values(key)
        return found[0] if found else None


class _Reader:
    """A cursor over the header text."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.position = 0

    @property
    def done(self) -> bool:
        return self.position >= len(self.text)

    def peek(self) -> str:
        return self.text[self.position] if not self.done else ""

    def skip_spaces(self) -> None:
        while self.peek() in (" ", "\t"):
            self.position += 1

    def until(self, stops: str) -> str:
        start = self.position
        while not self.done and self.text[self.position] not in stops:
            self.position += 1
        return self.text[start:self.position]


def _key(reader: _Reader) -> XfccKey:
    name = reader.until("=;,")
    if reader.peek() != "=":
        shown = name.strip() or "(empty)"
        raise XfccSyntaxError(f"{HEADER} pair {shown[:40]!r} has no '='")
    reader.position += 1
    key = _KEYS.get(name.lower())
    if key is None:
        raise XfccSyntaxError(f"{HEADER} key {name[:40]!r} is not one Envoy writes "
                              f"({', '.join(SPELLING.values())})")
    return key


def _quoted(reader: _Reader, key: XfccKey) -> str:
    reader.position += 1  # the opening quote
    value: list[str] = []
    while not reader.done:
        character = reader.text[reader.position]
        reader.position += 1
        if character == '"':
            if reader.peek() not in ("", ";", ","):
                raise XfccSyntaxError(f"{HEADER} has {reader.until(';,')[:40]!r} after the "
                                      f"closing quote of {SPELLING[key]}")
            return "".join(value)
        if character == "\\" and reader.peek() in ('"', "\\"):
            character = reader.text[reader.position]
            reader.position += 1
        value.append(character)
    raise XfccSyntaxError(f"{HEADER} has an unterminated quote (in {SPELLING[key]})")


def _unquoted(reader: _Reader, key: XfccKey) -> str:
    value = reader.until(";,")
    if forbidden := sorted(MUST_BE_QUOTED & set(value)):
        raise XfccSyntaxError(f"{HEADER}: the unquoted value of {SPELLING[key]} holds "
                              f"{forbidden[0]!r}, which must be quoted")
    return value


def _pair(reader: _Reader) -> XfccPair:
    key = _key(reader)
    value = _quoted(reader, key) if reader.peek() == '"' else _unquoted(reader, key)
    return XfccPair(key, value)


def _check_element(pairs: list[XfccPair], number: int) -> XfccElement:
    seen: set[XfccKey] = set()
    for pair in pairs:
        if pair.key in seen and pair.key not in REPEATABLE:
            raise XfccSyntaxError(f"{HEADER} element {number} has {SPELLING[pair.key]} more "
                                  "than once")
        seen.add(pair.key)
    return XfccElement(tuple(pairs))


def _after_a_name(what: str) -> XfccSyntaxError:
    return XfccSyntaxError(
        f"{HEADER} has {what} after a URI or DNS name, which Envoy does not quote: the "
        "client certificate's name could have written it (forward only cert and chain)")


def parse_xfcc(text: str) -> tuple[XfccElement, ...]:
    """Every element of the header, in order (the nearest proxy's last)."""
    reader = _Reader(text)
    elements: list[XfccElement] = []
    pairs: list[XfccPair] = []
    named = False  # a URI or DNS pair was read: only more of them may follow
    reader.skip_spaces()
    while True:
        if reader.peek() in ("", ",", ";"):
            raise XfccSyntaxError(f"{HEADER} has an empty "
                                  f"{'pair' if pairs else 'element'}")
        pair = _pair(reader)
        if named and pair.key not in CERTIFICATE_NAMES:
            raise _after_a_name(SPELLING[pair.key])
        named = named or pair.key in CERTIFICATE_NAMES
        pairs.append(pair)
        separator = reader.peek()
        reader.position += 1
        if separator == ";":
            continue
        elements.append(_check_element(pairs, len(elements) + 1))
        if not separator:
            return tuple(elements)
        if named:
            raise _after_a_name("another element")
        pairs = []
        reader.skip_spaces()  # intermediaries joining header lines may add a space
