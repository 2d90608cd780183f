"""The chain registry's SQL, written once for both backends: each builder takes the
backend's :class:`Dialect`; timestamps are passed as ``datetime`` and converted by the
backend."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from service.inbox.chains import PREFIX_MATCHES
from service.inbox.dialect import Dialect

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


def chain_statements(dialect: Dialect) -> ChainStatements:
    named = dialect.named

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
            + merge_sets(dialect.named_style.format)
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


