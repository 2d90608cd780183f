"""Reading where a connection comes from: the TCP peer, or the client a trusted proxy names in
a PROXY header read before anything else (the value is :class:`ConnectionOrigin`)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from service.forwarded import (
    Network,
    ProxyHeader,
    ProxyProtocolError,
    format_address,
    parse_address,
    within,
)
from service.forwarded import parse as parse_proxy_header
from service.forwarded.origin import ConnectionOrigin
from service.forwarded.proxy_protocol import V2_SIGNATURE
from service.logs import get_logger

log = get_logger("omgate")


def _peer_of(writer: asyncio.StreamWriter) -> tuple[str, int] | None:
    peer = writer.get_extra_info("peername")
    return (peer[0], peer[1]) if peer else None


async def direct_origin(_reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> ConnectionOrigin | None:
    return ConnectionOrigin(_peer_of(writer))


OriginReader = Callable[[asyncio.StreamReader, asyncio.StreamWriter],
                        Awaitable[ConnectionOrigin | None]]


@dataclass(frozen=True)
class ProxyProtocol:
    """Reads a PROXY v1/v2 header from trusted proxies before anything else is read."""

    trusted: tuple[Network, ...]
    timeout: float

    async def _read_header(self, reader: asyncio.StreamReader) -> ProxyHeader:
        head = await reader.readexactly(12)
        if head == V2_SIGNATURE:
            fixed = await reader.readexactly(4)
            payload = await reader.readexactly(int.from_bytes(fixed[2:4], "big"))
            data = head + fixed + payload
        elif head.startswith(b"PROXY "):
            data = head + await reader.readuntil(b"\r\n")
        else:
            raise ProxyProtocolError("the connection does not start with a PROXY header")
        result = parse_proxy_header(data)
        if not isinstance(result, ProxyHeader):
            raise ProxyProtocolError("incomplete PROXY header")
        return result

    async def origin(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                     ) -> ConnectionOrigin | None:
        """None when a trusted proxy sent no valid header (the connection is then closed)."""
        peer = _peer_of(writer)
        if not within(parse_address(peer[0]) if peer else None, self.trusted):
            return ConnectionOrigin(peer)  # a direct client: no header is read
        try:
            header = await asyncio.wait_for(self._read_header(reader), self.timeout)
        except (ProxyProtocolError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                TimeoutError, OSError) as error:
            log.warning("proxy_protocol.invalid", peer=format_address(peer),
                        reason=str(error) or type(error).__name__)
            return None
        return ConnectionOrigin(peer, header.source, proxied=header.relayed)
