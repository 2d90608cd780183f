"""Recorded chains as people and tools see them: the CLI, the console and the report."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from service.clientauth import ClientIdentity, Finding
from service.clientauth.chain import analyse_chain
from service.clientauth.keys import costly_key
from service.clientauth.presented import load_chain_to_show
from service.clientauth.summary import days_left
from service.inbox.chains import (
    LISTENER,
    NO_CERTIFICATE,
    ChainOutcome,
    ChainRecord,
    EndpointSeen,
)

SHORT = 12  # hex digits of a fingerprint shown in tables
DURATION = re.compile(r"^(\d+)([dhm])$")
DURATION_UNITS = {"d": "days", "h": "hours", "m": "minutes"}


LONGEST_DURATION = dt.timedelta(days=36500)  # a window reaching before this is no window


def parse_duration(text: str) -> dt.timedelta:
    """``7d``, ``12h`` or ``30m``, up to a hundred years."""
    match = DURATION.match(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a duration like 7d, 12h or 30m")
    try:
        duration = dt.timedelta(**{DURATION_UNITS[match[2]]: int(match[1])})
    except OverflowError:
        duration = LONGEST_DURATION + LONGEST_DURATION
    if duration > LONGEST_DURATION:
        raise ValueError(f"{text!r} is longer than {LONGEST_DURATION.days}d")
    return duration


def valid_prefix(text: str) -> bool:
    """A fingerprint prefix `chains show` accepts: hex digits, or ``none``."""
    return text == NO_CERTIFICATE or bool(re.fullmatch(r"[0-9a-fA-F:]{4,64}", text))


def record_identity(record: ChainRecord) -> ClientIdentity:
    """The chain as it was presented, as the policy engine reads it."""
    presented = load_chain_to_show(list(record.certificates))
    return ClientIdentity(presented.certificates, "forwarded" if record.source == "forwarded"
                          else "tls", record.last_peer, unreadable=presented.unreadable)


def worth_analysing(identity: ClientIdentity) -> bool:
    """Whether a recorded chain may have its path built (signatures checked) to be shown: not
    when a key would make that costly, which the live path refuses before any check
    (unsupported_key), nor when the chain is larger than a decision reads (chain_too_costly).
    Any client may have put such a chain in the registry."""
    return (bool(identity.chain) and not identity.oversized
            and not any(costly_key(c) for c in identity.chain))


def leaf_of(identity: ClientIdentity) -> x509.Certificate | None:
    """The client certificate the engine would pick (not always the first presented); the
    first presented when the chain is not worth analysing."""
    if not identity.chain:
        return None
    if not worth_analysing(identity):
        return identity.chain[0]
    return analyse_chain(identity.chain, ()).path[0].certificate


def _moment(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _endpoint_json(seen: EndpointSeen) -> dict[str, Any]:
    decision = seen.decision
    return {
        "endpoint": seen.endpoint or None, "messages": seen.messages,
        "decision": None if decision is None else {
            "outcome": decision.listed_outcome, "enforced": decision.enforced,
            "mode": decision.mode, "policy_sha256": decision.policy_sha256,
            "decided_at": decision.decided_at.isoformat(),
            "findings": [finding.to_json() for finding in decision.findings],
        },
    }


@dataclass(frozen=True)
class ChainRow:
    """One registry entry, with what a table shows of it."""

    record: ChainRecord
    leaf_subject: str
    issuer: str
    days_left: int | None
    outcome: ChainOutcome
    main_finding: Finding | None

    @property
    def key(self) -> str:
        return self.record.chain_sha256

    @property
    def short(self) -> str:
        return self.key[:SHORT]

    @property
    def first_seen(self) -> str:
        return _moment(self.record.first_seen)

    @property
    def last_seen(self) -> str:
        return _moment(self.record.last_seen)

    def to_json(self) -> dict[str, Any]:
        record = self.record
        return {
            "chain_sha256": self.key, "leaf_subject": self.leaf_subject,
            "issuer": self.issuer, "days_left": self.days_left, "outcome": self.outcome,
            "main_finding": self.main_finding.to_json() if self.main_finding else None,
            "first_seen": record.first_seen.isoformat(),
            "last_seen": record.last_seen.isoformat(), "connections": record.connections,
            "unproven": record.unproven, "messages": record.messages,
            "source": record.source, "last_peer": record.last_peer,
            "last_proxy": record.last_proxy,
            "endpoints": [_endpoint_json(seen) for seen in record.endpoints],
        }


def chain_row(record: ChainRecord, now: dt.datetime) -> ChainRow:
    leaf = leaf_of(record_identity(record))
    decision = record.last_decision
    if leaf is None:
        subject = "(no certificate)" if record.chain_sha256 == NO_CERTIFICATE else "(unreadable)"
        return ChainRow(record, subject, "", None, record.outcome,
                        decision.main_finding if decision else None)
    return ChainRow(record, leaf.subject.rfc4514_string(), leaf.issuer.rfc4514_string(),
                    days_left(leaf, now), record.outcome,
                    decision.main_finding if decision else None)


def select(records: Iterable[ChainRecord], *, outcome: ChainOutcome | None = None,
           endpoint: str | None = None, listener_judged: Collection[str] = ()
           ) -> list[ChainRecord]:
    """Filter by outcome, and by endpoint: chains decided or sending messages there, and
    for the endpoints in ``listener_judged`` (configured without rules of their own)
    chains the listener decided."""
    def on_endpoint(record: ChainRecord) -> bool:
        return endpoint is None or record.seen_on(endpoint) or (
            endpoint in listener_judged and record.seen_on(LISTENER))

    return [record for record in records
            if (outcome is None or record.outcome == outcome) and on_endpoint(record)]
