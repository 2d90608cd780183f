"""The ``client_auth.decision`` line: its fields, and full chains only the first time.

A chain this process has not logged before is written in full (each certificate's
summary); afterwards its fingerprint (``chain_sha256``) alone stands for it.
"""

from __future__ import annotations

import datetime as dt
from collections import OrderedDict
from typing import Any

from cryptography import x509

from service.clientauth import ClientIdentity, UnreadableCertificate, fingerprint, summarize
from service.clientauth.model import Outcome, in_presented_order
from service.gate.record import RecordedDecision
from service.gate.verdict import Verdict
from service.logs import get_logger

log = get_logger("omgate")

SEEN_CHAINS_LIMIT = 10_000


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


def _summary(item: x509.Certificate | UnreadableCertificate, *, oversized: bool,
             now: dt.datetime) -> dict[str, Any]:
    if isinstance(item, UnreadableCertificate):
        return {"unreadable": item.reason, "sha256": item.sha256}
    if oversized:  # read for nothing else either: parsing is what it would cost
        return {"unread": "the chain is too large to be judged", "sha256": fingerprint(item)}
    return summarize(item, now)


def chain_summary(identity: ClientIdentity, now: dt.datetime) -> list[dict[str, Any]]:
    """Each presented certificate's summary in presented order; unreadable ones, and all of
    a chain too large to be judged, by digest."""
    oversized = identity.oversized
    return [_summary(item, oversized=oversized, now=now)
            for item in in_presented_order(identity.chain, identity.unreadable)]


def decision_fields(identity: ClientIdentity, verdict: Verdict, outcome: Outcome,
                    seen: SeenChains, now: dt.datetime) -> dict[str, Any]:
    """The decision line's fields (the caller adds its context: endpoint, proxy, ...)."""
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
    if not identity.presented:
        fields["chain"] = []
    elif seen.first_time(identity.chain_sha256):
        fields["chain"] = chain_summary(identity, now)
    if identity.handshake is not None:
        fields["tls"] = identity.handshake.to_json()
    return fields


def context_fields(decision: RecordedDecision) -> dict[str, Any]:
    """Where the decision was made, for its line: only what applies."""
    fields: dict[str, Any] = {}
    if decision.endpoint is not None:
        fields["endpoint"] = decision.endpoint
    if decision.proxy is not None:
        fields["proxy"] = decision.proxy
    if decision.hook_problems:
        fields["hook_problems"] = list(decision.hook_problems)
    if decision.handshake != "complete":
        fields["handshake"] = decision.handshake
    return fields


class DecisionLog:
    """Writes the ``client_auth.decision`` line: info when accepted, else warning."""

    def __init__(self) -> None:
        self._seen = SeenChains()

    def decided(self, decision: RecordedDecision) -> None:
        fields = decision_fields(decision.identity, decision.verdict, decision.outcome,
                                 self._seen, decision.at)
        write = log.info if decision.outcome == "accept" else log.warning
        write("client_auth.decision", **fields, **context_fields(decision))
