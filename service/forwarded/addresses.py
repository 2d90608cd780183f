"""Who the client really is: trusted proxies, X-Forwarded-For and Forwarded, sans-IO."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable
from typing import Literal, get_args

from service.text import split_unquoted

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
# What one client is, when something is counted per client: an IPv4 address, or an IPv6
# /64 network (what one host is usually given).
ClientKey = Address | Network
IPV6_CLIENT_PREFIX = 64


def format_address(address: tuple[str, int] | tuple[object, ...] | None) -> str | None:
    """``host:port``, an IPv6 host in brackets (``[::1]:8443``); None for no address. The one
    way an address is written: log lines about one client must say the same thing."""
    if not address:
        return None
    host, port = str(address[0]), address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@functools.lru_cache(maxsize=4096)  # the same few peers and proxies, request after request
def parse_address(text: str) -> Address | None:
    text = text.strip().strip('"')
    if text.startswith("["):  # [v6]:port
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:  # v4:port
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id is not None:  # no forwarded address has a zone (any text)
            return None
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
    return address


def client_key(address: Address) -> ClientKey:
    if isinstance(address, ipaddress.IPv6Address):
        return ipaddress.IPv6Network(f"{address}/{IPV6_CLIENT_PREFIX}", strict=False)
    return address


def within(address: Address | None, networks: Iterable[Network]) -> bool:
    return address is not None and any(address in network for network in networks)


def _for_of(element: str) -> str:
    try:
        pairs = split_unquoted(element, ";", escapes_outside_quotes=False)
    except ValueError:
        return ""  # an unreadable hop: the walk stops there
    for pair in pairs:
        name, _, value = pair.partition("=")
        if name.strip().lower() == "for":
            return value.strip()
    return ""  # a hop that does not say whom it was for: the walk stops there


def _forwarded_for(value: str) -> list[str]:
    """``for=`` values of an RFC 7239 Forwarded header, one per element, in order; quoted
    strings are kept whole, so a ``for=`` inside another parameter's value is not one. A
    backslash escapes only inside quotes: outside, a client's trailing one escaped the
    comma of the element its proxy appended, and took it over."""
    try:
        elements = split_unquoted(value, ",", escapes_outside_quotes=False)
    except ValueError:  # a quote a client left open: the elements appended after it count
        elements = _elements_from_the_right(value)
    return [_for_of(element) for element in elements]


def _elements_from_the_right(value: str) -> list[str]:
    """The elements of a header whose quotes do not balance, read from its right end, where
    the proxies appended theirs; the first that cannot be read (the client's) is ``""``."""
    elements: list[str] = []
    end, quoted = len(value), False
    for position in range(len(value) - 1, -1, -1):
        character = value[position]
        if character == '"' and not (quoted and _escaped(value, position)):
            quoted = not quoted
        elif character == "," and not quoted:
            elements.append(value[position + 1:end])
            end = position
    elements.append("" if quoted else value[:end])
    return elements[::-1]


def _escaped(value: str, position: int) -> bool:
    """Whether the character at ``position`` follows an odd run of backslashes."""
    run = 0
    while position - run - 1 >= 0 and value[position - run - 1] == "\\":
        run += 1
    return run % 2 == 1


ClientAddressHeader = Literal["x-forwarded-for", "forwarded", "none"]
CLIENT_ADDRESS_HEADERS: tuple[ClientAddressHeader, ...] = get_args(ClientAddressHeader)


def _hops(header: str, value: str | None) -> list[str]:
    if not value or header == "none":
        return []
    if header == "forwarded":
        return _forwarded_for(value)
    return [hop for hop in value.split(",") if hop.strip()]


def client_address(peer: Address | None, trusted: tuple[Network, ...],
                   header: str, value: str | None) -> Address | None:
    """The rightmost address in ``header`` not belonging to a trusted proxy (the standard walk).

    Only called for a peer that is itself a trusted proxy; addresses a client wrote
    itself further left are never believed. One header is read, the one the proxies are
    configured to write (nginx's real_ip_header): a client can send the other one too,
    and a proxy that does not know it passes it on untouched.
    """
    hops = _hops(header, value)
    for hop in reversed(hops):
        address = parse_address(hop)
        if address is None:
            return peer  # an obfuscated or garbled hop: go no further than what we know
        if not within(address, trusted):
            return address
    return parse_address(hops[0]) if hops else peer
