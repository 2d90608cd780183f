"""The registry of client chains seen, in the inbox database (schema version 4).

Every worker and replica aggregates what it saw in memory (``service.observatory``) and
adds it here every few seconds with upserts, so one table holds the sum: a chain's
certificates, when it was first and last seen, its connections and messages, the last
peer and proxy, and per endpoint the last decision (outcome, findings, the fingerprint of
the policy that decided). ``client_auth_hours`` counts decisions per hour, endpoint and
outcome (by endpoint since schema version 6).

The statements are written once, here, for both backends (a backend supplies its
parameter style); timestamps are passed as ``datetime`` and converted by the backend.
"""

from __future__ import annotations

import datetime as dt
import json
import ssl
from collections.abc import Callable, Mapping, Sequence
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
# Schema

def chains_migration(timestamp_type: str) -> list[str]:
    """Schema version 4, in a backend's timestamp type."""
    return [
        f"""CREATE TABLE client_chains (
            chain_sha256  TEXT PRIMARY KEY,
            certificates  TEXT NOT NULL,
            source        TEXT NOT NULL,
            first_seen    {timestamp_type} NOT NULL,
            last_seen     {timestamp_type} NOT NULL,
            connections   BIGINT NOT NULL DEFAULT 0,
            unproven      BIGINT NOT NULL DEFAULT 0,
            messages      BIGINT NOT NULL DEFAULT 0,
            last_peer     TEXT,
            last_proxy    TEXT
        )""",
        "CREATE INDEX client_chains_last_seen ON client_chains (last_seen)",
        f"""CREATE TABLE client_chain_endpoints (
            chain_sha256  TEXT NOT NULL REFERENCES client_chains (chain_sha256),
            endpoint      TEXT NOT NULL,
            messages      BIGINT NOT NULL DEFAULT 0,
            outcome       TEXT,
            enforced      INTEGER,
            mode          TEXT,
            findings      TEXT,
            policy_sha256 TEXT,
            decided_at    {timestamp_type},
            PRIMARY KEY (chain_sha256, endpoint)
        )""",
        f"""CREATE TABLE client_auth_hours (
            hour          {timestamp_type} NOT NULL,
            outcome       TEXT NOT NULL,
            connections   BIGINT NOT NULL,
            PRIMARY KEY (hour, outcome)
        )""",
    ]


def hours_by_endpoint_migration(timestamp_type: str) -> list[str]:
    """Schema version 6: decisions counted per endpoint too; the hours counted before are
    the listener's (they were not told apart)."""
    return [
        f"""CREATE TABLE client_auth_hours_v6 (
            hour          {timestamp_type} NOT NULL,
            endpoint      TEXT NOT NULL,
            outcome       TEXT NOT NULL,
            connections   BIGINT NOT NULL,
            PRIMARY KEY (hour, endpoint, outcome)
        )""",
        "INSERT INTO client_auth_hours_v6 (hour, endpoint, outcome, connections) "  # noqa: S608
        f"SELECT hour, '{LISTENER}', outcome, connections FROM client_auth_hours",
        "DROP TABLE client_auth_hours",
        "ALTER TABLE client_auth_hours_v6 RENAME TO client_auth_hours",
    ]


# ---------------------------------------------------------------------------------------
# Statements

CHAIN_COLUMNS = ("chain_sha256", "certificates", "source", "first_seen", "last_seen",
                 "connections", "unproven", "messages", "last_peer", "last_proxy")
# How a sighting merges into the stored row, column by column. The columns merged other
# than by adding say when, how and from where the chain was seen: a row's proven sightings
# (connections, messages) say it, its unproven ones only while it has none.
Merge = Literal["add", "earliest", "latest", "newest"]
CHAIN_MERGES: Mapping[str, Merge] = {
    "connections": "add", "unproven": "add", "messages": "add",
    "first_seen": "earliest", "last_seen": "latest",
    "last_peer": "newest", "last_proxy": "newest", "source": "newest",
}
DECISION_COLUMNS = ("outcome", "enforced", "mode", "findings", "policy_sha256", "decided_at")
ENDPOINT_COLUMNS = ("chain_sha256", "endpoint", "messages", *DECISION_COLUMNS)


def _merged(merge: Merge, old: Callable[[str], str], new: Callable[[str], str],
            column: str) -> str:
    """SQL both dialects read: the stored row's ``column`` (``old``) merged with the
    sighting's (``new``). In an UPDATE's SET every column still reads the stored value."""
    stored, seen = old(column), new(column)
    match merge:
        case "add":
            return f"{stored} + {seen}"
        case "earliest":
            merged = f"CASE WHEN {seen} < {stored} THEN {seen} ELSE {stored} END"
        case "latest":
            merged = f"CASE WHEN {seen} > {stored} THEN {seen} ELSE {stored} END"
        case "newest":  # the value of whichever was seen last
            merged = (f"CASE WHEN {new('last_seen')} >= {old('last_seen')} THEN {seen} "
                      f"ELSE {stored} END")
    stored_proven, seen_proven = (f"({side('connections')} + {side('messages')} > 0)"
                                  for side in (old, new))
    return (f"CASE WHEN {seen_proven} AND NOT {stored_proven} THEN {seen} "
            f"WHEN {stored_proven} AND NOT {seen_proven} THEN {stored} ELSE {merged} END")


@dataclass(frozen=True)
class ChainStatements:
    """SQL both backends share for the chain registry; see :func:`chain_statements`."""

    upsert: str  # a sighting with certificates: insert, or add to the stored row
    add: str  # a sighting without certificates: add to a stored row only
    endpoint: str  # a sighting's endpoint: add messages, keep the newer decision
    hour: str  # decisions in one hour, endpoint and outcome
    recent: str  # chains last seen since :since, newest first (LIMIT :limit)
    endpoints_since: str  # the endpoint rows of those chains (the same LIMIT)
    by_prefix: str  # chains whose fingerprint starts with :prefix
    endpoints_by_prefix: str
    hours_since: str  # decisions by outcome since :since
    hours: str  # decisions per hour, endpoint and outcome since :since, latest first (LIMIT)
    forget: tuple[str, ...]  # remove what was last seen before :before


def chain_statements(placeholder: str) -> ChainStatements:
    def named(*names: str) -> str:
        return ", ".join(placeholder.format(name) for name in names)

    def merge_sets(new: Callable[[str], str]) -> str:
        return ", ".join(f"{column} = "
                         + _merged(merge, "client_chains.{}".format, new, column)
                         for column, merge in CHAIN_MERGES.items())

    chain_columns = ", ".join(CHAIN_COLUMNS)
    endpoint_columns = ", ".join(ENDPOINT_COLUMNS)
    fresher = ("excluded.decided_at IS NOT NULL AND (client_chain_endpoints.decided_at IS NULL "
               "OR excluded.decided_at >= client_chain_endpoints.decided_at)")
    decision_sets = ", ".join(
        f"{column} = CASE WHEN {fresher} THEN excluded.{column} "
        f"ELSE client_chain_endpoints.{column} END" for column in DECISION_COLUMNS)
    endpoint_select = (f"SELECT e.{', e.'.join(ENDPOINT_COLUMNS)} "  # noqa: S608 - constants
                       "FROM client_chain_endpoints AS e JOIN client_chains AS c "
                       "ON c.chain_sha256 = e.chain_sha256 ")
    prefix_where = f"WHERE c.chain_sha256 LIKE {named('prefix')}"
    recent_where = f"last_seen >= {named('since')}"
    return ChainStatements(
        upsert=f"INSERT INTO client_chains ({chain_columns}) "  # noqa: S608 - constants
               f"VALUES ({named(*CHAIN_COLUMNS)}) ON CONFLICT (chain_sha256) DO UPDATE SET "
               + merge_sets("excluded.{}".format),
        add="UPDATE client_chains SET "  # noqa: S608 - constants
            + merge_sets(placeholder.format)
            + f" WHERE chain_sha256 = {named('chain_sha256')}",
        endpoint=f"INSERT INTO client_chain_endpoints ({endpoint_columns}) "  # noqa: S608
                 f"VALUES ({named(*ENDPOINT_COLUMNS)}) "
                 "ON CONFLICT (chain_sha256, endpoint) DO UPDATE SET messages = "
                 "client_chain_endpoints.messages + excluded.messages, " + decision_sets,
        hour=f"INSERT INTO client_auth_hours (hour, endpoint, outcome, connections) "  # noqa: S608
             f"VALUES ({named('hour', 'endpoint', 'outcome', 'connections')}) "
             "ON CONFLICT (hour, endpoint, outcome) DO UPDATE SET "
             "connections = client_auth_hours.connections + excluded.connections",
        recent=f"SELECT {chain_columns} FROM client_chains AS c "  # noqa: S608 - constants
               f"WHERE {recent_where} ORDER BY last_seen DESC, chain_sha256 "
               f"LIMIT {named('limit')}",
        # the endpoint rows of exactly those chains, not of every chain in the window
        endpoints_since=endpoint_select + "WHERE c.chain_sha256 IN ("  # noqa: S608 - constants
                        f"SELECT chain_sha256 FROM client_chains WHERE {recent_where} "
                        f"ORDER BY last_seen DESC, chain_sha256 LIMIT {named('limit')})",
        by_prefix=f"SELECT {chain_columns} FROM client_chains AS c "  # noqa: S608 - constants
                  f"{prefix_where} ORDER BY chain_sha256 LIMIT {PREFIX_MATCHES}",
        endpoints_by_prefix=endpoint_select + prefix_where,
        hours_since=f"SELECT outcome, SUM(connections) AS connections "  # noqa: S608
                    f"FROM client_auth_hours WHERE hour >= {named('since')} GROUP BY outcome",
        hours=f"SELECT hour, endpoint, outcome, connections "  # noqa: S608 - constants
              f"FROM client_auth_hours WHERE hour >= {named('since')} "
              f"ORDER BY hour DESC, endpoint, outcome LIMIT {named('limit')}",
        forget=(
            "DELETE FROM client_chain_endpoints WHERE chain_sha256 IN ("  # noqa: S608
            f"SELECT chain_sha256 FROM client_chains WHERE last_seen < {named('before')})",
            f"DELETE FROM client_chains WHERE last_seen < {named('before')}",  # noqa: S608
            f"DELETE FROM client_auth_hours WHERE hour < {named('before')}",  # noqa: S608
        ),
    )


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
