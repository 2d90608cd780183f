"""Who the client of a request is: the typed values that cross from the listeners to the app.

- A listener puts one :class:`ConnectionFacts` per connection into the ASGI scope, under
  ``CONNECTION_KEY``: where the connection comes from and, on the TLS listener, the chain
  the client proved it holds with the listener policy's verdict on it.
- ``service/origin_middleware.py`` adds the request's :class:`RequestOrigin` (the real
  client, and what a trusted proxy forwarded) under ``ORIGIN_KEY``.
- :func:`request_identity` chooses which identity applies to a request and gets its
  verdict from the gate, which decides, caches and logs.

The TLS connection's decision is logged once, at its first request (so the line carries
that request's correlation id), or when the connection ends without one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from service.clientauth import ClientIdentity, Policy
from service.forwarded.origin import ConnectionOrigin, RequestOrigin
from service.gate import ClientAuthGate, Verdict

CONNECTION_KEY = "omgate.connection"
ORIGIN_KEY = "omgate.origin"


class ConnectionDecisions:
    """What one connection's requests share (mutable, owned by that connection): whether
    its decision line was written, and the verdicts of endpoints with rules of their own,
    each decided once per connection."""

    def __init__(self, proxy: str | None = None, hook_problems: tuple[str, ...] = ()) -> None:
        self.proxy = proxy  # the trusted proxy that relayed the connection (PROXY protocol)
        self.hook_problems = hook_problems  # what the OpenSSL hooks could not do
        self.recorded = False
        self.by_endpoint: dict[str, Verdict] = {}


@dataclass(frozen=True)
class ConnectionFacts:
    """One per connection, from its listener. ``client`` and ``verdict`` are the TLS
    listener's: the chain the client presented (with the handshake's facts) and the
    listener policy's verdict on it."""

    origin: ConnectionOrigin
    client: ClientIdentity | None = None
    verdict: Verdict | None = None
    decisions: ConnectionDecisions = field(default_factory=ConnectionDecisions, compare=False)

    def record_once(self, gate: ClientAuthGate) -> None:
        """Log the connection's decision, unless a request already did."""
        if self.client is None or self.verdict is None or self.decisions.recorded:
            return
        self.decisions.recorded = True
        gate.record(self.client, self.verdict, proxy=self.decisions.proxy,
                    hook_problems=self.decisions.hook_problems)


@dataclass(frozen=True)
class RequestIdentity:
    """The identity that applies to one request, and the verdict it is answered by."""

    identity: ClientIdentity
    verdict: Verdict


def connection_facts(extensions: Mapping[str, Any]) -> ConnectionFacts | None:
    facts = extensions.get(CONNECTION_KEY)
    return facts if isinstance(facts, ConnectionFacts) else None


def request_origin(extensions: Mapping[str, Any]) -> RequestOrigin | None:
    origin = extensions.get(ORIGIN_KEY)
    return origin if isinstance(origin, RequestOrigin) else None


@dataclass(frozen=True)
class Applicable:
    """Which identity applies: ``per_request`` ones are decided for this request alone
    (the connection's verdict cannot stand for them)."""

    identity: ClientIdentity
    per_request: bool
    proxy: str | None = None  # the trusted proxy that forwarded the certificate


def applicable(connection: ConnectionFacts | None, origin: RequestOrigin | None,
               peer: str | None) -> Applicable:
    """What a trusted proxy that forwards certificates relayed: the certificate it
    forwarded, or none when it forwarded none (never the chain the proxy itself connected
    with: that one is the proxy's, not its client's); else the TLS connection's own chain
    (with the forwarding headers an untrusted peer sent, which make it a decision of this
    request's); else, on a plain listener, no certificate at all."""
    forwarded_format = origin.forwarded_format if origin else None
    if origin is not None and origin.from_trusted_proxy and forwarded_format is not None:
        proxy = str(origin.proxy) if origin.proxy else None
        if origin.forwarded_chain is None:
            return Applicable(ClientIdentity((), "forwarded", peer,
                                             forwarded_format=forwarded_format), True, proxy)
        identity = origin.forwarded_chain.identity("forwarded", peer,
                                                   forwarded_format=forwarded_format)
        return Applicable(identity, True, proxy)
    ignored = origin.ignored_headers if origin else ()
    if connection is None or connection.client is None:
        return Applicable(ClientIdentity((), "forwarded", peer, ignored_headers=ignored,
                                         forwarded_format=forwarded_format), True)
    if ignored:
        return Applicable(dataclasses.replace(connection.client, ignored_headers=ignored), True)
    return Applicable(connection.client, False)


async def request_identity(extensions: Mapping[str, Any], gate: ClientAuthGate,
                           policy: Policy | None, endpoint: str,
                           peer: str | None) -> RequestIdentity:
    """The identity that applies to this request and its verdict, under ``policy`` (an
    endpoint's own rules) or the listener's; every decision is logged once."""
    connection = connection_facts(extensions)
    chosen = applicable(connection, request_origin(extensions), peer)
    if chosen.per_request or connection is None or connection.verdict is None:
        verdict = await gate.decide(chosen.identity, policy, endpoint=endpoint,
                                    proxy=chosen.proxy)
        return RequestIdentity(chosen.identity, verdict)
    connection.record_once(gate)
    if policy is None:
        return RequestIdentity(chosen.identity, connection.verdict)
    decided = connection.decisions.by_endpoint
    if endpoint not in decided:
        decided[endpoint] = await gate.decide(chosen.identity, policy, endpoint=endpoint)
    return RequestIdentity(chosen.identity, decided[endpoint])
