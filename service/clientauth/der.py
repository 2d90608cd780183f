"""Just enough DER to read what cryptography leaves unparsed (policyMappings).

cryptography hands an extension it does not model as raw bytes (``UnrecognizedExtension``);
policyMappings (RFC 5280, 4.2.1.5) is one, and RFC 5280's policy processing needs it.
"""

from __future__ import annotations

SEQUENCE, OBJECT_IDENTIFIER = 0x30, 0x06


def elements(data: bytes) -> list[tuple[int, bytes]]:
    """The (tag, content) pairs encoded one after another in ``data`` (definite lengths,
    single-byte tags); ValueError for anything else or anything truncated."""
    found = []
    position = 0
    while position < len(data):
        if position + 2 > len(data):
            raise ValueError("truncated element")
        tag, first = data[position], data[position + 1]
        position += 2
        if first < 0x80:
            length = first
        else:
            count = first & 0x7F
            if count == 0 or count > 4 or position + count > len(data):
                raise ValueError("unsupported length")
            length = int.from_bytes(data[position:position + count], "big")
            position += count
        if tag & 0x1F == 0x1F or position + length > len(data):
            raise ValueError("unsupported tag or truncated content")
        found.append((tag, data[position:position + length]))
        position += length
    return found


def object_identifier(content: bytes) -> str:
    """The dotted form of an OBJECT IDENTIFIER's content octets."""
    if not content or content[-1] & 0x80:
        raise ValueError("malformed object identifier")
    arcs: list[int] = []
    value = 0
    for octet in content:
        value = (value << 7) | (octet & 0x7F)
        if not octet & 0x80:
            arcs.append(value)
            value = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(str(arc) for arc in (first, arcs[0] - 40 * first, *arcs[1:]))


def policy_mappings(value: bytes) -> list[tuple[str, str]]:
    """(issuerDomainPolicy, subjectDomainPolicy) pairs of a policyMappings value."""
    [(tag, content)] = elements(value) or [(0, b"")]
    if tag != SEQUENCE:
        raise ValueError("policyMappings is not a SEQUENCE")
    pairs = []
    for tag, mapping in elements(content):
        members = elements(mapping)
        if tag != SEQUENCE or [kind for kind, _ in members] != [OBJECT_IDENTIFIER] * 2:
            raise ValueError("a mapping is not a pair of OBJECT IDENTIFIERs")
        pairs.append((object_identifier(members[0][1]), object_identifier(members[1][1])))
    if not pairs:
        raise ValueError("policyMappings is empty")
    return pairs
