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
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from service.clientauth import ClientIdentity, Decision, Policy, evaluate
from service.clientauth.model import Outcome
from service.gate.cache import DecisionCache, cache_key
from service.gate.decision_log import DecisionLog
from service.gate.record import DecisionOutput, HandshakeEnd, RecordedDecision
from service.gate.verdict import Verdict
from service.metrics import Metrics

POLICY_THREADS = 2
POLICY_QUEUE = 64  # evaluations waiting for a thread at once; more wait their turn


class DecisionCounts:
    """The decision metrics, as an output of the gate."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def decided(self, decision: RecordedDecision) -> None:
        self._metrics.decision(decision.identity, decision.verdict.decision, decision.outcome,
                               decision.verdict.enforced)


class ClientAuthGate:
    """Decides, caches, and hands every recorded decision to its outputs: the
    ``client_auth.decision`` line, the metrics when given, then ``outputs`` (the chain
    registry)."""

    def __init__(self, policy: Policy, metrics: Metrics | None = None, *,
                 outputs: Sequence[DecisionOutput] = (),
                 threads: int = POLICY_THREADS) -> None:
        self.policy = policy
        counts: tuple[DecisionOutput, ...] = (DecisionCounts(metrics),) if metrics else ()
        self._outputs: tuple[DecisionOutput, ...] = (DecisionLog(), *counts, *outputs)
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
               handshake: HandshakeEnd = "complete", endpoint: str | None = None,
               proxy: str | None = None, hook_problems: tuple[str, ...] = ()) -> None:
        """Hand the decision to every output. A handshake that ``failed`` (not by omgate's
        own refusal) never proved the client holds the key: the outcome is ``unproven``,
        whatever the policy thought, and it moves no acceptance metric."""
        if verdict.mode == "off":
            return
        outcome: Outcome = "unproven" if handshake == "failed" else verdict.decision.outcome
        recorded = RecordedDecision(identity, verdict, outcome, dt.datetime.now(dt.UTC),
                                    handshake, endpoint, proxy, hook_problems)
        for output in self._outputs:
            output.decided(recorded)

    async def decide(self, identity: ClientIdentity, policy: Policy | None = None, *,
                     endpoint: str | None = None, proxy: str | None = None) -> Verdict:
        """Evaluate (off the event loop) and record."""
        verdict = await self.evaluate_async(identity, policy)
        self.record(identity, verdict, endpoint=endpoint, proxy=proxy)
        return verdict

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
