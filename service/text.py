"""Small text helpers shared by the pure parsers (DNs, forwarded headers) and the answers."""

from __future__ import annotations


def split_unquoted(text: str, separator: str, *, keep_quoting: bool = True,
                   escapes_outside_quotes: bool = True) -> list[str]:
    """Split on ``separator`` where it is neither inside double quotes nor escaped.

    With ``keep_quoting`` the quotes and backslashes stay in the parts (to be split again
    or unescaped later); without, they are resolved. Unbalanced quotes raise ValueError.
    A backslash escapes anywhere (RFC 4514 names), or with ``escapes_outside_quotes``
    False only inside quotes (HTTP's quoted-pair, RFC 9110 section 5.6.4).
    """
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for character in text:
        if escaped:
            current.append(character)
            escaped = False
        elif character == "\\" and (quoted or escapes_outside_quotes):
            escaped = True
            if keep_quoting:
                current.append(character)
        elif character == '"':
            quoted = not quoted
            if keep_quoting:
                current.append(character)
        elif character == separator and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(character)
    if quoted:
        raise ValueError("unbalanced quotes")
    parts.append("".join(current))
    return parts


SHOWN_CHARACTERS = 200  # of a value a client sent, in an answer or a log line


def clipped(text: str, limit: int = SHOWN_CHARACTERS) -> str:
    """``text``, cut to ``limit`` characters (saying how long it was) when it is longer: a
    client chooses the length of what it sends, not of what omgate writes back or logs."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"
