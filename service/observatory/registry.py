"""The chain registry's in-memory side: count what each decision and message says about a
chain, and flush it to the inbox database every few seconds and at shutdown.

The hot path (:meth:`ChainRegistry.observe`, :meth:`ChainRegistry.message`) only adds to
dictionaries on the event loop; nothing waits for the database. Abuse is bounded: a chain
this worker has not recorded before is recorded only within a budget of new chains
(``service.observatory.budgets``: accepted chains and chains that carried a message have a
reserved share, refused and unproven ones spend chains.max_new_per_hour, one client address
a tenth of it), and a worker holds at most ``MAX_PENDING`` chains between two flushes
(refused and unproven ones in nine tenths of the places at most); the rest are counted
in ``omgate_chains_not_recorded_total{budget}`` and logged once per hour and budget
(``chains.not_recorded``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections import Counter, OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import get_args

from cryptography.hazmat.primitives.serialization import Encoding
from prometheus_client import Counter as PrometheusCounter

from service.clientauth import ClientIdentity, UnreadableCertificate
from service.clientauth.model import in_presented_order
from service.config import ChainsConfig
from service.gate import RecordedDecision
from service.inbox import ChainStore, InboxError
from service.inbox.chains import (
    LISTENER,
    NO_CERTIFICATE,
    ChainOutcome,
    ChainSighting,
    EndpointDecision,
    EndpointSeen,
    HourCount,
    chain_outcome,
)
from service.logs import get_logger
from service.metrics import Metrics
from service.observatory.budgets import Budget, NewChainBudgets, Standing, budget_weight

log = get_logger("omgate")
FLUSH_SECONDS = 5.0
MAX_PENDING = 10_000  # chains held between two flushes, at most
# of which refused and unproven chains may take at most this share: a flood of throw-away
# chains cannot keep out an accepted chain, or one that carried a message
REFUSED_PENDING_SHARE = 0.9


def _pending_places(standing: Standing) -> int:
    """How many chains may be held between two flushes when a new one of ``standing``
    comes."""
    return MAX_PENDING if standing == "reserved" else int(MAX_PENDING * REFUSED_PENDING_SHARE)

KNOWN_LIMIT = 10_000  # chains this worker remembers having recorded
FORGET_EVERY = dt.timedelta(hours=1)


def chain_key(identity: ClientIdentity) -> str:
    return identity.chain_sha256 or NO_CERTIFICATE


def presented_der(identity: ClientIdentity) -> tuple[bytes, ...]:
    """The presented certificates' bytes, in presented order, unreadable ones too."""
    return tuple(item.der if isinstance(item, UnreadableCertificate)
                 else item.public_bytes(Encoding.DER)
                 for item in in_presented_order(identity.chain, identity.unreadable))


def _hour(moment: dt.datetime) -> dt.datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


@dataclass
class _EndpointTally:
    messages: int = 0
    decision: EndpointDecision | None = None


@dataclass
class _Tally:
    """What one worker saw of one chain since the last flush."""

    certificates: tuple[bytes, ...] | None
    source: str
    first_seen: dt.datetime
    last_seen: dt.datetime
    connections: int = 0
    unproven: int = 0
    messages: int = 0
    last_peer: str | None = None
    last_proxy: str | None = None
    endpoints: dict[str, _EndpointTally] = field(default_factory=dict)
    # why ``certificates`` is None when a budget refused them (None: not tried, or the
    # chain was recorded before)
    kept_out: Budget | None = None

    @property
    def proven(self) -> bool:
        return self.connections + self.messages > 0

    def endpoint(self, endpoint: str) -> _EndpointTally:
        """The endpoint's counts (made the first time: this runs for every message)."""
        tally = self.endpoints.get(endpoint)
        if tally is None:
            tally = self.endpoints[endpoint] = _EndpointTally()
        return tally

    def seen(self, now: dt.datetime, source: str, peer: str | None, proxy: str | None, *,
             proven: bool) -> None:
        """When, how and from where the chain was seen (before its counts are added to):
        its proven sightings say it, the unproven ones only while it has none, so that
        replaying a public chain without its key changes nothing but its unproven count."""
        if proven and not self.proven:
            self.first_seen = now
        if proven or not self.proven:
            self.last_seen, self.source = now, source
            self.last_peer, self.last_proxy = peer, proxy

    def sighting(self, key: str) -> ChainSighting:
        return ChainSighting(
            key, self.certificates, self.source, self.first_seen, self.last_seen,
            self.connections, self.unproven, self.messages, self.last_peer, self.last_proxy,
            tuple(EndpointSeen(endpoint, tally.messages, tally.decision)
                  for endpoint, tally in self.endpoints.items()))


@dataclass(frozen=True)
class _Batch:
    """One flush: what to write, and the budget that kept each chain sent without its
    certificates out (a chain recorded before has none)."""

    sightings: list[ChainSighting]
    hours: list[HourCount]
    kept_out: dict[str, Budget]


class ChainRegistry:
    """Aggregates per chain in memory; :meth:`flush` writes it to the inbox."""

    def __init__(self, settings: ChainsConfig, policy_fingerprints: Mapping[str, str],
                 metrics: Metrics | None = None) -> None:
        """``policy_fingerprints``: the listener's policy under LISTENER, and every endpoint
        with a policy of its own under its path."""
        self._settings = settings
        self._fingerprints = policy_fingerprints
        self._pending: dict[str, _Tally] = {}
        self._hours: Counter[tuple[dt.datetime, str, ChainOutcome]] = Counter()
        self._unwritten = _Batch([], [], {})
        self._known: OrderedDict[str, None] = OrderedDict()
        self.budgets = NewChainBudgets(settings.max_new_per_hour)
        self._forgotten_at: dt.datetime | None = None
        self._not_recorded = PrometheusCounter(
            "omgate_chains_not_recorded",
            "Chain sightings the registry did not record, by the budget that kept them out.",
            ["budget"], registry=metrics.registry) if metrics is not None else None
        if self._not_recorded is not None:
            for budget in get_args(Budget):  # each at 0 from the start, as before its label
                self._not_recorded.labels(budget)

    # -- the hot path -----------------------------------------------------------------------

    def decided(self, decision: RecordedDecision) -> None:
        """Count one decision (the gate's output)."""
        identity, verdict, outcome = decision.identity, decision.verdict, decision.outcome
        now = decision.at
        endpoint = decision.endpoint or LISTENER
        self._hours[(_hour(now), endpoint, chain_outcome(outcome, verdict.enforced))] += 1
        tally = self._tally(identity, now, "reserved" if outcome == "accept" else "refused")
        if tally is None:
            return
        proven = outcome != "unproven"
        tally.seen(now, identity.source, identity.peer, decision.proxy, proven=proven)
        if not proven:  # its decision stands for nothing
            tally.unproven += 1
            return
        tally.connections += 1
        fingerprint = self._fingerprints.get(endpoint, self._fingerprints[LISTENER])
        tally.endpoint(endpoint).decision = EndpointDecision(
            outcome, verdict.enforced, verdict.mode, verdict.decision.findings, fingerprint,
            now)

    def message(self, identity: ClientIdentity, endpoint: str) -> None:
        """Count one stored and acknowledged message sent with ``identity``'s chain."""
        now = dt.datetime.now(dt.UTC)
        tally = self._tally(identity, now, "reserved")
        if tally is not None:
            # the proxy reaches the registry with the connection's decision only
            tally.seen(now, identity.source, identity.peer,
                       tally.last_proxy if tally.proven else None, proven=True)
            tally.messages += 1
            tally.endpoint(endpoint).messages += 1

    def _tally(self, identity: ClientIdentity, now: dt.datetime,
               standing: Standing) -> _Tally | None:
        """The chain's counts since the last flush, with its certificates when it is
        recorded already or a budget of new chains allows (tried again when it turns out
        to be accepted or carry a message)."""
        key = chain_key(identity)
        tally = self._pending.get(key)
        if tally is None:
            if len(self._pending) >= _pending_places(standing):
                self._count_not_recorded("pending")
                return None
            tally = self._pending[key] = _Tally(None, identity.source, now, now,
                                                last_peer=identity.peer)
        if tally.certificates is None and key not in self._known and (
                tally.kept_out is None
                or (standing == "reserved" and tally.kept_out != "reserved")):
            presented = presented_der(identity)
            tally.kept_out = self.budgets.spend(now, budget_weight(presented), standing,
                                                identity.peer)
            if tally.kept_out is None:
                tally.certificates = presented
        return tally

    def _count_not_recorded(self, budget: Budget, count: int = 1) -> None:
        if self._not_recorded is not None and count:
            self._not_recorded.labels(budget).inc(count)

    # -- flushing ---------------------------------------------------------------------------

    def _take(self) -> _Batch:
        """What was counted since the last take (and what could not be written then)."""
        kept_out = {key: tally.kept_out for key, tally in self._pending.items()
                    if tally.certificates is None and tally.kept_out is not None}
        batch = _Batch(
            self._unwritten.sightings + [tally.sighting(key)
                                         for key, tally in self._pending.items()],
            [HourCount(hour, endpoint, outcome, count)
             for (hour, endpoint, outcome), count in self._hours.items()],
            self._unwritten.kept_out | kept_out)
        self._pending, self._hours, self._unwritten = {}, Counter(), _Batch([], [], {})
        return batch

    async def flush(self, inbox: ChainStore) -> None:
        batch = self._take()
        if batch.sightings or batch.hours:
            try:
                missing = await inbox.record_chains(batch.sightings, batch.hours)
            except InboxError as error:
                log.error("chains.flush_failed", reason=str(error), chains=len(batch.sightings))
                self._keep_unwritten(batch)
                return
            for sighting in batch.sightings:
                # one sent without its certificates (a budget kept it out) is known only if
                # it was known before: the next sighting offers them again
                if sighting.certificates is not None or sighting.chain_sha256 in self._known:
                    self._remember(sighting.chain_sha256)
            for key in missing:
                budget = batch.kept_out.get(key)
                if budget is None:  # recorded before, removed since: offered again next time
                    self._known.pop(key, None)
                else:
                    self._count_not_recorded(budget)
        await self._forget_old(inbox)

    def _keep_unwritten(self, batch: _Batch) -> None:
        """Try again at the next flush, within the same bound as what is pending."""
        kept = batch.sightings[:MAX_PENDING]
        self._unwritten = _Batch(kept, [], {
            sighting.chain_sha256: batch.kept_out[sighting.chain_sha256]
            for sighting in kept if sighting.chain_sha256 in batch.kept_out})
        self._count_not_recorded("pending", len(batch.sightings) - len(kept))
        for count in batch.hours:
            self._hours[(count.hour, count.endpoint, count.outcome)] += count.connections

    def _remember(self, key: str) -> None:
        self._known[key] = None
        self._known.move_to_end(key)
        if len(self._known) > KNOWN_LIMIT:
            self._known.popitem(last=False)

    async def _forget_old(self, inbox: ChainStore) -> None:
        now = dt.datetime.now(dt.UTC)
        if self._forgotten_at is not None and now - self._forgotten_at < FORGET_EVERY:
            return
        self._forgotten_at = now
        try:
            await inbox.forget_chains(now - dt.timedelta(days=self._settings.retention_days))
        except InboxError as error:
            log.error("chains.flush_failed", reason=str(error), doing="retention")

    async def run(self, inbox: ChainStore, stop: asyncio.Event,
                  interval: float = FLUSH_SECONDS) -> None:
        """Flush every ``interval`` seconds until ``stop`` is set (the last flush is the
        caller's, after the connections have drained)."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
            if stop.is_set():
                return
            await self.flush(inbox)
