"""The client-certificate gate: runs the policy, logs the decision, says whether to refuse.

The TLS layer captures and the policy engine explains; this is where the two
meet. ``client_auth.decision`` is logged once per TLS connection (or per
request for identities that did not come from omgate's own handshake), with
full certificate summaries the first time this process sees a chain and only
its fingerprint afterwards.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from service.clientauth import (
    ClientIdentity,
    Decision,
    Policy,
    UnreadableCertificate,
    evaluate,
    summarize,
)
from service.clientauth.model import in_presented_order
from service.forwarded.middleware import ORIGIN_EXTENSION
from service.forwarded.origin import RequestOrigin
from service.logs import get_logger
from service.metrics import Metrics

log = get_logger("omgate")
SEEN_CHAINS_LIMIT = 10_000
DECISION_TTL_SECONDS = 60
# The scope["extensions"] key under which a TLS connection's verdict reaches the app.
CLIENT_AUTH_EXTENSION = "omgate.client_auth"


@dataclass(frozen=True)
class Verdict:
    decision: Decision
    mode: str
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


class ForwardedCertificateUnreadable(Exception):
    """A trusted proxy forwarded a client certificate header that cannot be read."""


class DecisionCache:
    """Recent decisions by chain and policy: a sender reconnecting with the same chain (as
    Salesforce does, many times a minute) costs one path building per ``ttl`` seconds, not
    one per connection. Entries expire so that time-bound findings stay current."""

    def __init__(self, ttl: float = DECISION_TTL_SECONDS, limit: int = SEEN_CHAINS_LIMIT) -> None:
        self._ttl = dt.timedelta(seconds=ttl)
        self._limit = limit
        self._entries: OrderedDict[tuple[object, ...], tuple[dt.datetime, Decision]] = (
            OrderedDict())

    def get(self, key: tuple[object, ...], now: dt.datetime) -> Decision | None:
        entry = self._entries.get(key)
        if entry is None or now - entry[0] > self._ttl:
            return None
        return entry[1]

    def put(self, key: tuple[object, ...], now: dt.datetime, decision: Decision) -> None:
        self._entries[key] = (now, decision)
        self._entries.move_to_end(key)
        if len(self._entries) > self._limit:
            self._entries.popitem(last=False)


def chain_summary(identity: ClientIdentity, now: dt.datetime) -> list[dict[str, Any]]:
    """Each presented certificate's summary in presented order; unreadable ones by digest."""
    return [{"unreadable": item.reason, "sha256": item.sha256}
            if isinstance(item, UnreadableCertificate) else summarize(item, now)
            for item in in_presented_order(identity.chain, identity.unreadable)]


class ClientAuthGate:
    def __init__(self, policy: Policy, metrics: Metrics | None = None) -> None:
        self.policy = policy
        self.metrics = metrics
        self._seen = SeenChains()
        self._decisions = DecisionCache()

    def _evaluate(self, identity: ClientIdentity, policy: Policy, now: dt.datetime) -> Decision:
        if not identity.presented:  # cheap, and its message depends on the handshake
            return evaluate(identity, policy, now)
        key = (identity.chain_sha256, id(policy), identity.source, identity.ignored_headers)
        decision = self._decisions.get(key, now)
        if decision is None:
            decision = evaluate(identity, policy, now)
            self._decisions.put(key, now, decision)
        return decision

    def decide(self, identity: ClientIdentity, policy: Policy | None = None,
               **context: Any) -> Verdict:
        """Evaluate under ``policy`` (an endpoint's) or the listener's, and log the decision."""
        policy = policy or self.policy
        if policy.mode == "off":  # nothing was asked for: nothing to decide or log
            return Verdict(Decision("accept", ()), "off", enforced=False)
        now = dt.datetime.now(dt.UTC)
        decision = self._evaluate(identity, policy, now)
        verdict = Verdict(decision, policy.mode, policy.enforced)
        self._log(identity, verdict, now, context)
        if self.metrics is not None:
            self.metrics.decision(identity, decision, verdict.enforced, now)
        return verdict

    def _chain_field(self, identity: ClientIdentity, now: dt.datetime) -> Any:
        if not identity.presented:
            return []
        if self._seen.first_time(identity.chain_sha256):
            return chain_summary(identity, now)
        return None

    def _log(self, identity: ClientIdentity, verdict: Verdict, now: dt.datetime,
             context: dict[str, Any]) -> None:
        fields: dict[str, Any] = {
            "outcome": verdict.decision.outcome,
            "enforced": verdict.enforced,
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
        if verdict.decision.accepted:
            log.info("client_auth.decision", **fields)
        else:
            log.warning("client_auth.decision", would_reject=not verdict.enforced, **fields)

    def request_verdict(self, extensions: dict[str, Any], peer: str | None, path: str,
                        policy: Policy | None = None) -> Verdict:
        """The verdict for one request's client, from whichever source applies.

        A certificate a trusted proxy forwarded wins; otherwise the TLS connection's own
        verdict (decided once per connection, or once per connection and endpoint for an
        endpoint with its own rules); forwarding headers from an untrusted peer are noted
        and force a decision for this request alone.
        """
        origin: RequestOrigin | None = extensions.get(ORIGIN_EXTENSION)
        ignored = origin.ignored_headers if origin else ()
        if origin is not None and origin.forwarded_error is not None:
            raise ForwardedCertificateUnreadable(origin.forwarded_error)
        if origin is not None and origin.forwarded_chain is not None:
            identity = ClientIdentity(origin.forwarded_chain, "forwarded", peer)
            return self.decide(identity, policy, endpoint=path, proxy=str(origin.peer))
        tls = extensions.get(CLIENT_AUTH_EXTENSION)
        if tls is None:
            return self.decide(ClientIdentity((), "forwarded", peer, ignored_headers=ignored),
                               policy, endpoint=path)
        if ignored:
            identity = dataclasses.replace(tls["identity"], ignored_headers=ignored)
            return self.decide(identity, policy, endpoint=path)
        if policy is None:
            verdict: Verdict = tls["verdict"]
            return verdict
        cache: dict[str, Verdict] = tls["endpoint_verdicts"]
        if path not in cache:
            cache[path] = self.decide(tls["identity"], policy, endpoint=path)
        return cache[path]
