"""``server.max_connections_per_peer`` for requests a trusted proxy forwards over HTTP:
behind such a proxy omgate sees only the proxy's connections, so each request it forwards
counts as a connection of the client it names."""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from service.app import fault_response
from service.connections import OpenConnections
from service.correlation import new_correlation_id
from service.forwarded import Address, format_address
from service.identity import request_origin
from service.logs import get_logger
from service.soap import SoapFaultError
from service.text import clipped

log = get_logger("omgate")


def _too_many_connections(client: Address | None) -> SoapFaultError:
    return SoapFaultError(
        "too_many_connections",
        f"Client {client} has too many requests under way at once "
        "(server.max_connections_per_peer); please retry.", status=503, fault_code="Server")


class ForwardedClientCap:
    """Counts each request a trusted proxy forwards over HTTP as a connection of the client
    it names (``server.max_connections_per_peer``). Placed after ForwardedMiddleware, which
    names the client."""

    def __init__(self, app: ASGIApp, connections: OpenConnections) -> None:
        self.app = app
        self.connections = connections

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        origin = request_origin(scope.get("extensions") or {})
        if scope["type"] != "http" or origin is None or not origin.from_trusted_proxy:
            await self.app(scope, receive, send)  # a client's own connection: counted already
            return
        if not self.connections.claim(origin.client):
            correlation_id = new_correlation_id()
            error = _too_many_connections(origin.client)
            log.warning("om.rejected", reason=error.reason, status=error.status,
                        endpoint=clipped(scope["path"]), correlation_id=correlation_id,
                        peer=format_address(Request(scope).client))
            response = fault_response(error, correlation_id)
            response.headers["Connection"] = "close"  # the body stays unread
            await response(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.connections.release(origin.client)
