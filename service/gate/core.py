"""The client-certificate gate: decides (through the policy, off the event loop), caches,
and logs the decision; it never chooses whose identity applies (``service/identity.py``
does).

Evaluating a chain costs CPU that any client can ask for, so it runs in a small pool
of threads (``evaluate_async``), off the event loop, behind a bounded queue; a chain
already judged under the same policy is answered from a cache without queueing.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Literal

from service.clientauth import ClientIdentity, Decision, Policy, evaluate
from service.clientauth.model import Outcome
from service.gate.cache import DecisionCache, cache_key
from service.gate.decision_log import SeenChains, decision_fields
from service.gate.verdict import Verdict
from service.logs import get_logger
from service.metrics import Metrics

if TYPE_CHECKING:
    from service.observatory.registry import ChainRegistry

log = get_logger("omgate")
POLICY_THREADS = 2
POLICY_QUEUE = 64  # evaluations waiting for a thread at once; more wait their turn
# How the TLS handshake behind a decision ended: "refused" by omgate's own verify step.
HandshakeEnd = Literal["complete", "refused", "failed"]


class ClientAuthGate:
    def __init__(self, policy: Policy, metrics: Metrics | None = None,
                 threads: int = POLICY_THREADS, chains: ChainRegistry | None = None) -> None:
        self.policy = policy
        self.metrics = metrics
        self.chains = chains  # the chain registry, told of every decision recorded
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
        outcome: Outcome = "unproven" if handshake == "failed" else verdict.decision.outcome
        if handshake != "complete":
            context["handshake"] = handshake
        fields = decision_fields(identity, verdict, outcome, self._seen, dt.datetime.now(dt.UTC))
        (log.info if outcome == "accept" else log.warning)("client_auth.decision",
                                                           **fields, **context)
        if self.metrics is not None:
            self.metrics.decision(identity, verdict.decision, outcome, verdict.enforced)
        if self.chains is not None:
            self.chains.observe(identity, verdict, outcome, context)

    async def decide(self, identity: ClientIdentity, policy: Policy | None = None,
                     **context: Any) -> Verdict:
        """Evaluate (off the event loop) and record."""
        verdict = await self.evaluate_async(identity, policy)
        self.record(identity, verdict, **context)
        return verdict

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
