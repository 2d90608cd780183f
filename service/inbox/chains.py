"""The registry of client chains seen, in the inbox database (schema version 4): its
values, and those values to and from rows.

Every worker and replica aggregates what it saw in memory (``service.observatory``) and
adds it here every few seconds with upserts, so one table holds the sum: a chain's
certificates, when it was first and last seen, its connections and messages, the last
peer and proxy, and per endpoint the last decision (outcome, findings, the fingerprint of
the policy that decided). ``client_auth_hours`` counts decisions per hour, endpoint and
outcome (by endpoint since schema version 6). Its tables are in
``service.inbox.migrations``, its statements in ``service.inbox.chain_statements``.
"""

from __future__ import annotations

import datetime as dt
import json
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

from service.clientauth import Finding
from service.clientauth.model import Outcome

# What `omgate chains list --outcome` filters on: a decision's outcome, with a refusal
# that was not enforced (request mode) told apart.
ChainOutcome = Literal["accept", "reject", "would_reject", "unproven"]
CHAIN_OUTCOMES: tuple[ChainOutcome, ...] = get_args(ChainOutcome)
LISTENER = ""  # the endpoint of a decision made per connection, under the listener's policy
NO_CERTIFICATE = "none"  # the registry's key for connections that presented no chain
PREFIX_MATCHES = 10  # chains a fingerprint prefix may name before it is called ambiguous


def chain_outcome(outcome: Outcome, enforced: bool) -> ChainOutcome:
    return "would_reject" if outcome == "reject" and not enforced else outcome


def to_pem(certificates: tuple[bytes, ...]) -> str:
    """The chain as presented, one PEM block per certificate (unreadable ones too)."""
    return "".join(ssl.DER_cert_to_PEM_cert(der) for der in certificates)


def from_pem(text: str) -> tuple[bytes, ...]:
    marker = "-----END CERTIFICATE-----"
    blocks = [block + marker for block in text.split(marker) if block.strip()]
    return tuple(ssl.PEM_cert_to_DER_cert(block.strip() + "\n") for block in blocks)


@dataclass(frozen=True)
class EndpointDecision:
    """The last decision about a chain on one endpoint (or the listener)."""

    outcome: Outcome
    enforced: bool
    mode: str
    findings: tuple[Finding, ...]
    policy_sha256: str
    decided_at: dt.datetime

    @property
    def listed_outcome(self) -> ChainOutcome:
        return chain_outcome(self.outcome, self.enforced)

    @property
    def main_finding(self) -> Finding | None:
        """The first error, else the first warning, else the first finding."""
        ranked = sorted(self.findings, key=lambda finding: ("error", "warning", "info").index(
            finding.severity))
        return ranked[0] if ranked else None


@dataclass(frozen=True)
class EndpointSeen:
    endpoint: str  # LISTENER for the per-connection decision
    messages: int
    decision: EndpointDecision | None


@dataclass(frozen=True)
class ChainSighting:
    """What one worker adds to the registry for one chain in one flush."""

    chain_sha256: str
    # the presented certificates' DER, in order; None: only add to a chain already recorded
    certificates: tuple[bytes, ...] | None
    source: str
    first_seen: dt.datetime
    last_seen: dt.datetime
    connections: int
    unproven: int
    messages: int
    last_peer: str | None
    last_proxy: str | None
    endpoints: tuple[EndpointSeen, ...]


@dataclass(frozen=True)
class HourCount:
    hour: dt.datetime
    endpoint: str  # LISTENER for decisions per connection (and those counted before v6)
    outcome: ChainOutcome
    connections: int


@dataclass(frozen=True)
class ChainRecord:
    """One chain as the registry holds it."""

    chain_sha256: str
    certificates: tuple[bytes, ...]
    source: str
    first_seen: dt.datetime
    last_seen: dt.datetime
    connections: int
    unproven: int
    messages: int
    last_peer: str | None
    last_proxy: str | None
    endpoints: tuple[EndpointSeen, ...]

    @property
    def last_decision(self) -> EndpointDecision | None:
        decisions = [seen.decision for seen in self.endpoints if seen.decision is not None]
        return max(decisions, key=lambda decision: decision.decided_at, default=None)

    @property
    def outcome(self) -> ChainOutcome:
        """The last decision's; a chain never proven is ``unproven`` whatever was decided."""
        decision = self.last_decision
        if decision is None or (self.connections == 0 and self.unproven > 0):
            return "unproven"
        return decision.listed_outcome

    def seen_on(self, endpoint: str) -> bool:
        return any(seen.endpoint == endpoint for seen in self.endpoints)


# ---------------------------------------------------------------------------------------
# Values to and from rows

def sighting_values(sighting: ChainSighting) -> dict[str, Any]:
    """The parameters of ChainStatements.upsert (and .add)."""
    return {
        "chain_sha256": sighting.chain_sha256,
        "certificates": to_pem(sighting.certificates or ()),
        "source": sighting.source, "first_seen": sighting.first_seen,
        "last_seen": sighting.last_seen, "connections": sighting.connections,
        "unproven": sighting.unproven, "messages": sighting.messages,
        "last_peer": sighting.last_peer, "last_proxy": sighting.last_proxy,
    }


def endpoint_values(chain_sha256: str, seen: EndpointSeen) -> dict[str, Any]:
    """The parameters of ChainStatements.endpoint."""
    decision = seen.decision
    return {
        "chain_sha256": chain_sha256, "endpoint": seen.endpoint, "messages": seen.messages,
        "outcome": decision.outcome if decision else None,
        "enforced": int(decision.enforced) if decision else None,
        "mode": decision.mode if decision else None,
        "findings": json.dumps([finding.to_json() for finding in decision.findings])
        if decision else None,
        "policy_sha256": decision.policy_sha256 if decision else None,
        "decided_at": decision.decided_at if decision else None,
    }


def hour_values(count: HourCount) -> dict[str, Any]:
    return {"hour": count.hour, "endpoint": count.endpoint, "outcome": count.outcome,
            "connections": count.connections}


def hour_counts(rows: Sequence[Mapping[str, Any]]) -> list[HourCount]:
    return [HourCount(as_datetime(row["hour"]), row["endpoint"], row["outcome"],
                      int(row["connections"])) for row in rows]


def as_datetime(value: Any) -> dt.datetime:
    """A timestamp as a backend returns it (SQLite: ISO 8601 text)."""
    return value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(value)


def _endpoint_seen(row: Mapping[str, Any]) -> EndpointSeen:
    decision = None
    if row["decided_at"] is not None:
        decision = EndpointDecision(
            outcome=row["outcome"], enforced=bool(row["enforced"]), mode=row["mode"],
            findings=tuple(Finding(**item) for item in json.loads(row["findings"])),
            policy_sha256=row["policy_sha256"], decided_at=as_datetime(row["decided_at"]))
    return EndpointSeen(row["endpoint"], int(row["messages"]), decision)


def chain_records(rows: Sequence[Mapping[str, Any]],
                  endpoint_rows: Sequence[Mapping[str, Any]]) -> list[ChainRecord]:
    """Chains with their endpoints, in the order of ``rows``."""
    by_chain: dict[str, list[EndpointSeen]] = {}
    for row in endpoint_rows:
        by_chain.setdefault(row["chain_sha256"], []).append(_endpoint_seen(row))
    return [ChainRecord(
        chain_sha256=row["chain_sha256"], certificates=from_pem(row["certificates"]),
        source=row["source"], first_seen=as_datetime(row["first_seen"]),
        last_seen=as_datetime(row["last_seen"]), connections=int(row["connections"]),
        unproven=int(row["unproven"]), messages=int(row["messages"]),
        last_peer=row["last_peer"], last_proxy=row["last_proxy"],
        endpoints=tuple(sorted(by_chain.get(row["chain_sha256"], []),
                               key=lambda seen: seen.endpoint)),
    ) for row in rows]


def prefix_pattern(prefix: str) -> str:
    """A LIKE pattern for a fingerprint prefix (hex digits and ``none`` only reach here)."""
    return prefix.lower() + "%"
