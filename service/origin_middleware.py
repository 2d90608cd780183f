"""ASGI middleware: resolve each request's origin, and drop what untrusted peers forwarded.

After it, ``scope["client"]`` is the real client as far as trusted proxies tell, and
``scope["extensions"][ORIGIN_KEY]`` (``service/identity.py``) holds the
:class:`RequestOrigin`; headers an untrusted peer sent to pass itself off as a proxy are
gone from ``scope["headers"]``.
"""

from __future__ import annotations

from typing import Any

from service.forwarded.addresses import parse_address
from service.forwarded.origin import ForwardingSettings, resolve, untrusted_origin
from service.identity import ORIGIN_KEY, connection_facts


def _header_name(raw: bytes) -> str:
    return raw.decode("latin-1").lower()


def _headers(raw: list[tuple[bytes, bytes]]) -> tuple[dict[str, str], frozenset[str]]:
    """The headers by lower-case name, the lines of one name joined by commas (RFC 9110
    section 5.3), and the names that came in more than one line."""
    merged: dict[str, str] = {}
    repeated: set[str] = set()
    for name, value in raw:
        key = _header_name(name)
        text = value.decode("latin-1")
        if key in merged:
            repeated.add(key)
            merged[key] = f"{merged[key]},{text}"
        else:
            merged[key] = text
    return merged, frozenset(repeated)


class ForwardedMiddleware:
    def __init__(self, app: Any, settings: ForwardingSettings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extensions = dict(scope.get("extensions") or {})
        client = scope.get("client")
        peer = parse_address(client[0]) if client else None
        connection = connection_facts(extensions)
        relayed = connection is not None and connection.origin.proxied
        proxied = connection.origin.client if connection is not None and relayed else None
        if relayed or self.settings.trusted_proxies:
            headers, repeated = _headers(scope["headers"])
            origin = resolve(headers, peer, parse_address(proxied[0]) if proxied else None,
                             self.settings, relayed=relayed, repeated=repeated)
        else:  # nobody is believed: only the names of what was forwarded count
            origin = untrusted_origin(peer, peer, (_header_name(name)
                                                   for name, _value in scope["headers"]),
                                      self.settings)
        scope = dict(scope)
        if origin.ignored_headers:
            dropped = {name.encode("latin-1") for name in origin.ignored_headers}
            scope["headers"] = [(name, value) for name, value in scope["headers"]
                                if name.lower() not in dropped]
        if proxied is not None and parse_address(proxied[0]) == origin.client:
            # the client the PROXY header names, with its port, even when its address is
            # the proxy's own: every line of the request names it as the decision line does
            scope["client"] = (str(origin.client), proxied[1])
        elif origin.client is not None and origin.client != peer:
            scope["client"] = (str(origin.client), 0)
        extensions[ORIGIN_KEY] = origin
        scope["extensions"] = extensions
        await self.app(scope, receive, send)
