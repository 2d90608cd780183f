"""The plain-HTTP listener, for a balancer that terminates TLS in front of omgate."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from service.identity import CONNECTION_KEY, ConnectionFacts
from service.listeners.proxy_header import OriginReader, direct_origin
from service.listeners.serving import HttpServing


@dataclass
class PlainConnectionHandler:
    serving: HttpServing
    read_origin: OriginReader = direct_origin

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        origin = await self.read_origin(reader, writer)
        if origin is None:
            writer.close()
            return
        await self.serving.serve(reader, writer, {CONNECTION_KEY: ConnectionFacts(origin)})
