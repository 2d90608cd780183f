"""Recent decisions, so a sender reconnecting with the same chain is judged once a minute."""

from __future__ import annotations

import datetime as dt
import threading
from collections import OrderedDict

from service.clientauth import ClientIdentity, Decision, Policy

DECISION_TTL_SECONDS = 60
CACHE_LIMIT = 10_000

CacheKey = tuple[object, ...]


def cache_key(identity: ClientIdentity, policy: Policy) -> CacheKey:
    """What a decision depends on besides the time: the chain, the policy, where it came
    from, and OpenSSL's complaints about it (its third opinion: where and what, not whose
    name, which the chain and the policy's trust already say)."""
    facts = identity.handshake
    complaints = tuple((result.depth, result.error)
                       for result in facts.verify_results if result.error) if facts else ()
    # forwarded_from_untrusted_peer names the peer that sent the headers it ignores
    peer = identity.peer if identity.ignored_headers else None
    return (identity.chain_sha256, id(policy), identity.source, identity.ignored_headers,
            peer, identity.forwarded_format, complaints, facts.verified_under if facts else "")


class DecisionCache:
    """Recent decisions by :func:`cache_key`: a sender reconnecting with the same chain (as
    Salesforce does, many times a minute) costs one path building per ``ttl`` seconds, not
    one per connection. Entries expire so that time-bound findings stay current. Safe to
    use from the policy threads and the event loop at once."""

    def __init__(self, ttl: float = DECISION_TTL_SECONDS, limit: int = CACHE_LIMIT) -> None:
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
