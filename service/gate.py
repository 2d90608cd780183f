"""The client-certificate gate: runs the policy, logs the decision, says whether to refuse.

The TLS layer captures and the policy engine explains; this is where the two
meet. ``client_auth.decision`` is logged once per TLS connection (or per
request for identities that did not come from omgate's own handshake), with
full certificate summaries the first time this process sees a chain and only
its fingerprint afterwards.

Evaluating a chain costs CPU that any client can ask for, so it runs in a small pool
of threads (``evaluate_async``), off the event loop, behind a bounded queue; a chain
already judged under the same policy is answered from a cache without queueing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from service.clientauth import (
    ClientIdentity,
    Decision,
    Policy,
    UnreadableCertificate,
    evaluate,
    summarize,
)
from service.clientauth.model import Mode, Outcome, in_presented_order
from service.forwarded.middleware import ORIGIN_EXTENSION
from service.forwarded.origin import RequestOrigin
from service.logs import get_logger
from service.metrics import Metrics

if TYPE_CHECKING:
    from service.observatory.registry import ChainRegistry

log = get_logger("omgate")
SEEN_CHAINS_LIMIT = 10_000
DECISION_TTL_SECONDS = 60
POLICY_THREADS = 2
POLICY_QUEUE = 64  # evaluations waiting for a thread at once; more wait their turn
# The scope["extensions"] key under which a TLS connection's verdict reaches the app.
CLIENT_AUTH_EXTENSION = "omgate.client_auth"


@dataclass(frozen=True)
class Verdict:
    decision: Decision
    mode: Mode
    enforced: bool

    @property
    def refuse(self) -> bool:
        return self.enforced and not self.decision.accepted


class SeenChains:
    """A bounded memory of chain fingerprints already logged in full."""

    def __init__(self, limit: int = SEEN_CHAINS_LIMIT) -> None:
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._limit = limit

    def first_time(self, fingerprint: str) -> bool:
        if fingerprint in self._seen:
            self._seen.move_to_end(fingerprint)
            return False
        self._seen[fingerprint] = None
        if len(self._seen) > self._limit:
            self._seen.popitem(last=False)
        return True


CacheKey = tuple[object, ...]
# How the TLS handshake behind a decision ended: "refused" by omgate's own verify step.
HandshakeEnd = Literal["complete", "refused", "failed"]


class DecisionCache:
    """Recent decisions by chain and policy: a sender reconnecting with the same chain (as
    Salesforce does, many times a minute) costs one path building per ``ttl`` seconds, not
    one per connection. Entries expire so that time-bound findings stay current. Safe to
    use from the policy threads and the event loop at once."""

    def __init__(self, ttl: float = DECISION_TTL_SECONDS, limit: int = SEEN_CHAINS_LIMIT) -> None:
        self._ttl = dt.timedelta(seconds=ttl)
        self._limit = limit
        self._entries: OrderedDict[CacheKey, tuple[dt.datetime, Decision]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: CacheKey, now: dt.datetime) -> Decision | None:
        with self._lock:
            entry = self._entries.get(key)
        if entry is None or now - entry[0] > self._ttl:
            return None
        return entry[1]

    def put(self, key: CacheKey, now: dt.datetime, decision: Decision) -> None:
        with self._lock:
            self._entries[key] = (now, decision)
            self._entries.move_to_end(key)
            if len(self._entries) > self._limit:
                self._entries.popitem(last=False)


def cache_key(identity: ClientIdentity, policy: Policy) -> CacheKey:
    """What a decision depends on besides the time: the chain, the policy, where it came
    from, and OpenSSL's complaints about it (its third opinion)."""
    facts = identity.handshake
    complaints = tuple((result.depth, result.error, result.subject)
                       for result in facts.verify_results if result.error) if facts else ()
    return (identity.chain_sha256, id(policy), identity.source, identity.ignored_headers,
            complaints, facts.verified_under if facts else "")


def chain_summary(identity: ClientIdentity, now: dt.datetime) -> list[dict[str, Any]]:
    """Each presented certificate's summary in presented order; unreadable ones by digest."""
    return [{"unreadable": item.reason, "sha256": item.sha256}
            if isinstance(item, UnreadableCertificate) else summarize(item, now)
            for item in in_presented_order(identity.chain, identity.unreadable)]


class ClientAuthGate:
    def __init__(self, policy: Policy, metrics: Metrics | None = None,
                 threads: int = POLICY_THREADS, chains: ChainRegistry | None = None) -> None:
        self.policy = policy
        self.metrics = metrics
        self.chains = chains  # the chain observatory's registry (counts in memory only)
        self._seen = SeenChains()
        self._decisions = DecisionCache()
        self._pool: ThreadPoolExecutor | None = None
        self._threads = threads
        self._queue: asyncio.Semaphore | None = None

    def _verdict(self, decision: Decision, policy: Policy) -> Verdict:
        return Verdict(decision, policy.mode, policy.enforced)

    def cached(self, identity: ClientIdentity, policy: Policy | None = None) -> Verdict | None:
        """The verdict when nothing needs evaluating (mode off, or a recent decision)."""
        policy = policy or self.policy
        if policy.mode == "off":  # nothing was asked for: nothing to decide
            return Verdict(Decision("accept", ()), "off", enforced=False)
        decision = self._decisions.get(cache_key(identity, policy), dt.datetime.now(dt.UTC))
        return None if decision is None else self._verdict(decision, policy)

    def evaluate(self, identity: ClientIdentity, policy: Policy | None = None) -> Verdict:
        """Decide under ``policy`` (an endpoint's) or the listener's; no logging. Safe in any
        thread."""
        policy = policy or self.policy
        known = self.cached(identity, policy)
        if known is not None:
            return known
        now = dt.datetime.now(dt.UTC)
        decision = evaluate(identity, policy, now)
        if identity.presented:  # no chain: cheap, and its message depends on the handshake
            self._decisions.put(cache_key(identity, policy), now, decision)
        return self._verdict(decision, policy)

    async def evaluate_async(self, identity: ClientIdentity,
                             policy: Policy | None = None) -> Verdict:
        """:meth:`evaluate`, in the policy threads unless the cache already knows."""
        known = self.cached(identity, policy)
        if known is not None or not identity.presented:
            return known or self.evaluate(identity, policy)
        if self._pool is None or self._queue is None:
            self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="omgate-policy")
            self._queue = asyncio.Semaphore(POLICY_QUEUE)
        async with self._queue:
            return await asyncio.get_running_loop().run_in_executor(
                self._pool, self.evaluate, identity, policy)

    def record(self, identity: ClientIdentity, verdict: Verdict, *,
               handshake: HandshakeEnd = "complete", **context: Any) -> None:
        """Log the decision and count it. A handshake that ``failed`` (not by omgate's own
        refusal) never proved the client holds the key: the outcome is ``unproven``,
        whatever the policy thought, and it moves no acceptance metric."""
        if verdict.mode == "off":
            return
        now = dt.datetime.now(dt.UTC)
        outcome: Outcome = "unproven" if handshake == "failed" else verdict.decision.outcome
        if handshake != "complete":
            context["handshake"] = handshake
        self._log(identity, verdict, outcome, now, context)
        if self.metrics is not None:
            self.metrics.decision(identity, verdict.decision, outcome, verdict.enforced)
        if self.chains is not None:
            self.chains.observe(identity, verdict, outcome, context)

    def decide(self, identity: ClientIdentity, policy: Policy | None = None,
               **context: Any) -> Verdict:
        """Evaluate and record, for identities that need no handshake (forwarded ones)."""
        verdict = self.evaluate(identity, policy)
        self.record(identity, verdict, **context)
        return verdict

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _chain_field(self, identity: ClientIdentity, now: dt.datetime) -> Any:
        if not identity.presented:
            return []
        if self._seen.first_time(identity.chain_sha256):
            return chain_summary(identity, now)
        return None

    def _log(self, identity: ClientIdentity, verdict: Verdict, outcome: Outcome,
             now: dt.datetime, context: dict[str, Any]) -> None:
        fields: dict[str, Any] = {
            "outcome": outcome,
            "enforced": verdict.enforced,
            # the policy refused the chain, and only the mode let the message through
            "would_reject": not verdict.enforced and not verdict.decision.accepted,
            "mode": verdict.mode,
            "source": identity.source,
            "peer": identity.peer,
            "findings": [finding.to_json() for finding in verdict.decision.findings],
            "chain_sha256": identity.chain_sha256 or None,
        }
        chain = self._chain_field(identity, now)
        if chain is not None:
            fields["chain"] = chain
        if identity.handshake is not None:
            fields["tls"] = identity.handshake.to_json()
        fields.update(context)
        if outcome == "accept":
            log.info("client_auth.decision", **fields)
        else:
            log.warning("client_auth.decision", **fields)

    async def _decide_async(self, identity: ClientIdentity, policy: Policy | None,
                            **context: Any) -> Verdict:
        verdict = await self.evaluate_async(identity, policy)
        self.record(identity, verdict, **context)
        return verdict

    async def request_verdict(self, extensions: dict[str, Any], peer: str | None, path: str,
                              policy: Policy | None = None) -> Verdict:
        """The verdict for one request's client, from whichever source applies.

        A certificate a trusted proxy forwarded wins; otherwise the TLS connection's own
        verdict (decided once per connection, or once per connection and endpoint for an
        endpoint with its own rules); forwarding headers from an untrusted peer are noted
        and force a decision for this request alone.
        """
        origin: RequestOrigin | None = extensions.get(ORIGIN_EXTENSION)
        ignored = origin.ignored_headers if origin else ()
        forwarded_format = origin.forwarded_format if origin else None
        if origin is not None and origin.forwarded_chain is not None:
            identity = dataclasses.replace(
                origin.forwarded_chain.identity("forwarded", peer),
                forwarded_format=forwarded_format)
            return await self._decide_async(identity, policy, endpoint=path,
                                            proxy=str(origin.peer))
        tls = extensions.get(CLIENT_AUTH_EXTENSION)
        if tls is None:
            return self.decide(ClientIdentity((), "forwarded", peer, ignored_headers=ignored,
                                              forwarded_format=forwarded_format),
                               policy, endpoint=path)
        if ignored:
            identity = dataclasses.replace(tls["identity"], ignored_headers=ignored)
            return await self._decide_async(identity, policy, endpoint=path)
        if policy is None:
            verdict: Verdict = tls["verdict"]
            return verdict
        cache: dict[str, Verdict] = tls["endpoint_verdicts"]
        if path not in cache:
            cache[path] = await self._decide_async(tls["identity"], policy, endpoint=path)
        return cache[path]
