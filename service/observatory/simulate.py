"""Replay recorded chains against a candidate policy: what would it accept and refuse?

Each chain is decided under the policy of every endpoint it was seen on (the listener's
for per-connection decisions and for endpoints without rules of their own), with the
policy engine, as of now, with OpenSSL's opinion taken offline as the listener would
(service/tls/opinion.py).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from service.clientauth import Decision, Policy
from service.inbox.chains import LISTENER, ChainRecord
from service.observatory.views import record_identity
from service.tls.opinion import evaluate_offline


@dataclass(frozen=True)
class CandidatePolicies:
    listener: Policy
    endpoints: Mapping[str, Policy]  # the endpoints with rules of their own

    def for_endpoint(self, endpoint: str) -> Policy:
        return self.endpoints.get(endpoint, self.listener)


@dataclass(frozen=True)
class ChainVerdict:
    record: ChainRecord
    decision: Decision  # the strictest of its endpoints' decisions
    enforced: bool

    @property
    def proven(self) -> bool:
        """Seen with a completed handshake (or forwarded by a trusted proxy) at least once."""
        return self.record.connections > 0

    @property
    def refused(self) -> bool:
        return self.enforced and not self.decision.accepted

    @property
    def would_reject(self) -> bool:
        """Refused by the rules, in a mode that does not enforce them (request)."""
        return not self.enforced and not self.decision.accepted


@dataclass(frozen=True)
class Totals:
    chains: int
    connections: int
    messages: int


def _totals(verdicts: Iterable[ChainVerdict]) -> Totals:
    items = list(verdicts)
    return Totals(len(items), sum(v.record.connections for v in items),
                  sum(v.record.messages for v in items))


@dataclass(frozen=True)
class Simulation:
    verdicts: tuple[ChainVerdict, ...]

    @property
    def proven(self) -> list[ChainVerdict]:
        return [verdict for verdict in self.verdicts if verdict.proven]

    @property
    def refused(self) -> list[ChainVerdict]:
        return [verdict for verdict in self.proven if verdict.refused]

    @property
    def accepted(self) -> list[ChainVerdict]:
        return [verdict for verdict in self.proven if verdict.decision.accepted]

    @property
    def unproven(self) -> list[ChainVerdict]:
        return [verdict for verdict in self.verdicts if not verdict.proven]

    def totals(self, verdicts: Iterable[ChainVerdict]) -> Totals:
        return _totals(verdicts)


def _endpoints(record: ChainRecord) -> list[str]:
    return [seen.endpoint for seen in record.endpoints] or [LISTENER]


def decide_record(record: ChainRecord, policies: CandidatePolicies,
                  now: dt.datetime) -> ChainVerdict:
    identity = record_identity(record)
    decided: list[tuple[Decision, Policy]] = []
    for policy in {id(p): p for p in map(policies.for_endpoint, _endpoints(record))}.values():
        decided.append((evaluate_offline(identity, policy, now), policy))
    decision, policy = min(decided, key=lambda pair: pair[0].accepted)  # a refusal first
    return ChainVerdict(record, decision, policy.enforced)


def simulate(records: Iterable[ChainRecord], policies: CandidatePolicies,
             now: dt.datetime | None = None) -> Simulation:
    now = now or dt.datetime.now(dt.UTC)
    return Simulation(tuple(decide_record(record, policies, now) for record in records))
