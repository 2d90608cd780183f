"""The chain registry's in-memory side: count what each decision and message says about a
chain, and flush it to the inbox database every few seconds and at shutdown.

The hot path (:meth:`ChainRegistry.observe`, :meth:`ChainRegistry.message`) only adds to
dictionaries on the event loop; nothing waits for the database. Abuse is bounded: a
worker records at most ``chains.max_new_per_hour`` chains it has not recorded before, and
holds at most ``MAX_PENDING`` chains between two flushes; the rest are counted in
``omgate_chains_not_recorded_total`` and logged once per hour (``chains.not_recorded``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections import Counter, OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding
from prometheus_client import Counter as PrometheusCounter

from service.clientauth import ClientIdentity, UnreadableCertificate
from service.clientauth.model import Outcome, in_presented_order
from service.config import ChainsConfig
from service.gate import Verdict
from service.inbox import Inbox, InboxError
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

log = get_logger("omgate")
FLUSH_SECONDS = 5.0
# A new chain spends chains.max_new_per_hour once for every started BUDGET_UNIT_BYTES of
# its certificates (a real sender's chain: once), so the hour's budget bounds the bytes
# any client can add to the database as well as the rows.
BUDGET_UNIT_BYTES = 16 * 1024
MAX_PENDING = 10_000  # chains held between two flushes, at most
KNOWN_LIMIT = 10_000  # chains this worker remembers having recorded
WINDOW = dt.timedelta(hours=1)
FORGET_EVERY = dt.timedelta(hours=1)


def chain_key(identity: ClientIdentity) -> str:
    return identity.chain_sha256 or NO_CERTIFICATE


def presented_der(identity: ClientIdentity) -> tuple[bytes, ...]:
    """The presented certificates' bytes, in presented order, unreadable ones too."""
    return tuple(item.der if isinstance(item, UnreadableCertificate)
                 else item.public_bytes(Encoding.DER)
                 for item in in_presented_order(identity.chain, identity.unreadable))


def budget_weight(presented: tuple[bytes, ...]) -> int:
    """What recording this chain spends of the hour's budget of new chains."""
    return max(1, -(-sum(map(len, presented)) // BUDGET_UNIT_BYTES))


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

    @property
    def proven(self) -> bool:
        return self.connections + self.messages > 0

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


class ChainRegistry:
    """Aggregates per chain in memory; :meth:`flush` writes it to the inbox."""

    def __init__(self, settings: ChainsConfig, policy_fingerprints: Mapping[str, str],
                 metrics: Metrics | None = None) -> None:
        """``policy_fingerprints``: the listener's policy under LISTENER, and every endpoint
        with a policy of its own under its path."""
        self._settings = settings
        self._fingerprints = policy_fingerprints
        self._pending: dict[str, _Tally] = {}
        self._hours: Counter[tuple[dt.datetime, ChainOutcome]] = Counter()
        self._unwritten: list[ChainSighting] = []
        self._known: OrderedDict[str, None] = OrderedDict()
        self._window_start = dt.datetime.now(dt.UTC)
        self._new_in_window = 0
        self._warned = False
        self._forgotten_at: dt.datetime | None = None
        self._not_recorded = PrometheusCounter(
            "omgate_chains_not_recorded",
            "Chain sightings the registry did not record (chains.max_new_per_hour reached).",
            registry=metrics.registry) if metrics is not None else None

    # -- the hot path -----------------------------------------------------------------------

    def observe(self, identity: ClientIdentity, verdict: Verdict, outcome: Outcome,
                context: Mapping[str, Any]) -> None:
        """Count one decision (from ClientAuthGate.record)."""
        now = dt.datetime.now(dt.UTC)
        self._hours[(_hour(now), chain_outcome(outcome, verdict.enforced))] += 1
        tally = self._tally(chain_key(identity), identity, now)
        if tally is None:
            return
        proven = outcome != "unproven"
        tally.seen(now, identity.source, identity.peer, context.get("proxy"), proven=proven)
        if not proven:  # its decision stands for nothing
            tally.unproven += 1
            return
        tally.connections += 1
        endpoint = context.get("endpoint") or LISTENER
        fingerprint = self._fingerprints.get(endpoint, self._fingerprints[LISTENER])
        tally.endpoints.setdefault(endpoint, _EndpointTally()).decision = EndpointDecision(
            outcome, verdict.enforced, verdict.mode, verdict.decision.findings, fingerprint,
            now)

    def message(self, key: str, endpoint: str) -> None:
        """Count one stored and acknowledged message sent with the chain ``key``."""
        now = dt.datetime.now(dt.UTC)
        tally = self._tally(key, None, now)
        if tally is not None:
            # a message follows its connection's decision, which said how and from where
            tally.seen(now, tally.source, tally.last_peer, tally.last_proxy, proven=True)
            tally.messages += 1
            tally.endpoints.setdefault(endpoint, _EndpointTally()).messages += 1

    def _tally(self, key: str, identity: ClientIdentity | None,
               now: dt.datetime) -> _Tally | None:
        tally = self._pending.get(key)
        if tally is not None:
            return tally
        if len(self._pending) >= MAX_PENDING:
            self._count_not_recorded(1)
            return None
        certificates = None
        if identity is not None and key not in self._known:
            presented = presented_der(identity)
            if self._may_add_new(now, budget_weight(presented)):
                certificates = presented
        source = identity.source if identity is not None else "tls"
        tally = self._pending[key] = _Tally(certificates, source, now, now)
        return tally

    def _may_add_new(self, now: dt.datetime, weight: int) -> bool:
        if now - self._window_start >= WINDOW:
            self._window_start, self._new_in_window, self._warned = now, 0, False
        if self._new_in_window + weight <= self._settings.max_new_per_hour:
            self._new_in_window += weight
            return True
        if not self._warned:
            self._warned = True
            log.warning("chains.not_recorded", limit=self._settings.max_new_per_hour,
                        detail="chains.max_new_per_hour new chains recorded by this worker "
                               "this hour; further new chains are counted, not recorded")
        return False

    def _count_not_recorded(self, count: int) -> None:
        if self._not_recorded is not None and count:
            self._not_recorded.inc(count)

    # -- flushing ---------------------------------------------------------------------------

    def take(self) -> tuple[list[ChainSighting], list[HourCount]]:
        """What was counted since the last take (and what could not be written then)."""
        sightings = self._unwritten + [tally.sighting(key)
                                       for key, tally in self._pending.items()]
        hours = [HourCount(hour, outcome, count)
                 for (hour, outcome), count in self._hours.items()]
        self._pending, self._hours, self._unwritten = {}, Counter(), []
        return sightings, hours

    async def flush(self, inbox: Inbox) -> None:
        sightings, hours = self.take()
        if sightings or hours:
            try:
                missing = await inbox.record_chains(sightings, hours)
            except InboxError as error:
                log.error("chains.flush_failed", reason=str(error), chains=len(sightings))
                self._keep_unwritten(sightings, hours)
                return
            self._count_not_recorded(missing)
            for sighting in sightings:
                # one sent without its certificates (the hour's budget was spent) is known
                # only if it was known before: the next sighting offers them again
                if sighting.certificates is not None or sighting.chain_sha256 in self._known:
                    self._remember(sighting.chain_sha256)
        await self._forget_old(inbox)

    def _keep_unwritten(self, sightings: list[ChainSighting], hours: list[HourCount]) -> None:
        """Try again at the next flush, within the same bound as what is pending."""
        self._unwritten = sightings[:MAX_PENDING]
        self._count_not_recorded(len(sightings) - len(self._unwritten))
        for count in hours:
            self._hours[(count.hour, count.outcome)] += count.connections

    def _remember(self, key: str) -> None:
        self._known[key] = None
        self._known.move_to_end(key)
        if len(self._known) > KNOWN_LIMIT:
            self._known.popitem(last=False)

    async def _forget_old(self, inbox: Inbox) -> None:
        now = dt.datetime.now(dt.UTC)
        if self._forgotten_at is not None and now - self._forgotten_at < FORGET_EVERY:
            return
        self._forgotten_at = now
        try:
            await inbox.forget_chains(now - dt.timedelta(days=self._settings.retention_days))
        except InboxError as error:
            log.error("chains.flush_failed", reason=str(error), doing="retention")

    async def run(self, inbox: Inbox, stop: asyncio.Event,
                  interval: float = FLUSH_SECONDS) -> None:
        """Flush every ``interval`` seconds until ``stop`` is set (the last flush is the
        caller's, after the connections have drained)."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
            if stop.is_set():
                return
            await self.flush(inbox)
