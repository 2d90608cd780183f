"""PROXY protocol v1 and v2 headers (HAProxy's spec), sans-IO.

``parse(data)`` looks at the bytes a trusted proxy sent first and returns the
header it carries, ``NEED_MORE`` while it is incomplete, or raises
:class:`ProxyProtocolError` when the bytes are not a PROXY header.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Final

V2_SIGNATURE: Final = b"\r\n\r\n\x00\r\nQUIT\n"
V1_PREFIX: Final = b"PROXY "
V1_MAX: Final = 107  # the longest v1 line, CRLF included
V2_MAX_PAYLOAD: Final = 4096  # addresses plus TLVs; far above what balancers send


class ProxyProtocolError(ValueError):
    pass


@dataclass(frozen=True)
class ProxyHeader:
    """What the proxy says about the connection; ``source`` is None for LOCAL/UNKNOWN.

    ``relayed`` is False only for v2 LOCAL (the proxy's own connection, a health check):
    otherwise what follows comes from a client, named or (UNKNOWN, UNSPEC) not.
    """

    version: int
    source: tuple[str, int] | None
    destination: tuple[str, int] | None
    length: int  # bytes the header occupied
    tlvs: tuple[tuple[int, bytes], ...] = ()
    relayed: bool = True


class _NeedMore:
    def __repr__(self) -> str:
        return "NEED_MORE"


NEED_MORE: Final = _NeedMore()


def _port(text: bytes) -> int:
    if not text.isdigit() or len(text) > 5 or int(text) > 65535:
        raise ProxyProtocolError(f"bad port {text[:8]!r}")
    return int(text)


def _address(text: bytes, version: int) -> str:
    try:
        address = ipaddress.ip_address(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise ProxyProtocolError(f"bad address {text[:45]!r}") from None
    if address.version != version:
        raise ProxyProtocolError(f"{address} is not an IPv{version} address")
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
        raise ProxyProtocolError("an address with a zone")  # the zone: any text
    return str(address)


def _parse_v1(data: bytes) -> ProxyHeader | _NeedMore:
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX:
            raise ProxyProtocolError("PROXY v1 line longer than 107 bytes")
        return NEED_MORE
    fields = data[:end].split(b" ")
    if fields[1:2] == [b"UNKNOWN"]:
        return ProxyHeader(1, None, None, end + 2)
    if len(fields) != 6 or fields[1] not in (b"TCP4", b"TCP6"):
        raise ProxyProtocolError(f"malformed PROXY v1 line {data[:end][:60]!r}")
    version = 4 if fields[1] == b"TCP4" else 6
    return ProxyHeader(
        1,
        (_address(fields[2], version), _port(fields[4])),
        (_address(fields[3], version), _port(fields[5])),
        end + 2,
    )


def _tlvs(payload: bytes) -> tuple[tuple[int, bytes], ...]:
    found = []
    position = 0
    while position + 3 <= len(payload):
        kind = payload[position]
        length = int.from_bytes(payload[position + 1:position + 3], "big")
        found.append((kind, payload[position + 3:position + 3 + length]))
        position += 3 + length
    return tuple(found)


def _parse_v2(data: bytes) -> ProxyHeader | _NeedMore:
    if len(data) < 16:
        return NEED_MORE
    version_command, family = data[12], data[13]
    if version_command >> 4 != 2:
        raise ProxyProtocolError(f"PROXY v2 version {version_command >> 4}")
    length = int.from_bytes(data[14:16], "big")
    if length > V2_MAX_PAYLOAD:
        raise ProxyProtocolError(f"PROXY v2 payload of {length} bytes")
    if len(data) < 16 + length:
        return NEED_MORE
    payload = data[16:16 + length]
    command = version_command & 0x0F
    if command == 0x0:  # LOCAL: the proxy's own connection (a health check)
        return ProxyHeader(2, None, None, 16 + length, relayed=False)
    if command != 0x1:
        raise ProxyProtocolError(f"PROXY v2 command {command}")
    if family == 0x11 and length >= 12:  # TCP over IPv4
        source = (str(ipaddress.IPv4Address(payload[0:4])), int.from_bytes(payload[8:10], "big"))
        destination = (str(ipaddress.IPv4Address(payload[4:8])),
                       int.from_bytes(payload[10:12], "big"))
        return ProxyHeader(2, source, destination, 16 + length, _tlvs(payload[12:]))
    if family == 0x21 and length >= 36:  # TCP over IPv6
        source = (str(ipaddress.IPv6Address(payload[0:16])),
                  int.from_bytes(payload[32:34], "big"))
        destination = (str(ipaddress.IPv6Address(payload[16:32])),
                       int.from_bytes(payload[34:36], "big"))
        return ProxyHeader(2, source, destination, 16 + length, _tlvs(payload[36:]))
    if family == 0x00:  # UNSPEC
        return ProxyHeader(2, None, None, 16 + length)
    raise ProxyProtocolError(f"PROXY v2 address family 0x{family:02x} is not TCP")


def parse(data: bytes) -> ProxyHeader | _NeedMore:
    """The PROXY header at the start of ``data``."""
    if data.startswith(V2_SIGNATURE[:len(data)]) and len(data) < len(V2_SIGNATURE):
        return NEED_MORE
    if data.startswith(V2_SIGNATURE):
        return _parse_v2(data)
    if V1_PREFIX.startswith(data[:len(V1_PREFIX)]) and len(data) < len(V1_PREFIX):
        return NEED_MORE
    if data.startswith(V1_PREFIX):
        return _parse_v1(data)
    raise ProxyProtocolError("no PROXY protocol header (expected 'PROXY ' or the v2 signature)")
