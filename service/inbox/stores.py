"""The inbox's interfaces: the store of notifications and their delivery, the store of the
chain registry, and the inbox that is both, over one database.

A backend stores one message in one transaction and returns only after the commit is
durable; the caller acknowledges only then. With group commit, messages that arrive
while a commit is in progress are stored together in the next transaction (one fsync
for many), each behind its own savepoint, and each caller still waits for that commit.

Duplicates are decided by a unique constraint on the 15-character forms of
(organization ID, notification ID), so 15- and 18-character spellings of one ID are one
key. Each notification keeps a digest of its content: a redelivery with another digest is
acknowledged like any duplicate (Salesforce must not retry it) but recorded as a
conflict, with what it said, so that IDs stored in advance cannot silently swallow the
real messages. Delivery claims respect each record's order: a notification is not handed
out while an earlier one for the same record is still pending.
"""

from __future__ import annotations

import builtins
import datetime as dt
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from service.inbox.batching import GroupCommitter
from service.inbox.chain_statements import ChainStatements
from service.inbox.chains import ChainRecord, ChainSighting, HourCount, prefix_pattern
from service.inbox.encoding import Rows
from service.inbox.model import (
    DeliveryEvent,
    InboxStats,
    IncomingMessage,
    ListedNotification,
    RecordedConflict,
    State,
    StoredNotification,
    StoreResult,
)


class NotificationStore(ABC):
    """Notifications and their delivery: stores (grouped into shared commits, unless not
    ``group_commit``), reads, claims and the changes delivery makes.

    The method :meth:`list` shadows the builtin in the class body, so signatures here and
    in the backends spell the type ``builtins.list``."""

    def __init__(self, *, group_commit: bool = True) -> None:
        self._committer = GroupCommitter(self.store_prepared) if group_commit else None

    async def store(self, incoming: IncomingMessage) -> StoreResult:
        """Store every notification of a message durably (together with others, if grouped)."""
        # The rows (JSON, digests) are made now, as the message arrives, while an earlier
        # commit waits for the disk. Made by the committer between two commits, they held up
        # the next commit and the acknowledgements of the last (docs/PERFORMANCE.md, "The
        # 100-notification stall").
        rows = self.prepare(incoming)
        if self._committer is not None:
            return await self._committer.store(rows)
        [result] = await self.store_prepared([rows])
        if isinstance(result, Exception):
            raise result
        return result

    async def store_batch(self, batch: Sequence[IncomingMessage]
                          ) -> builtins.list[StoreResult | Exception]:
        """Store messages in one transaction, each behind a savepoint; one result each."""
        return await self.store_prepared([self.prepare(incoming) for incoming in batch])

    @abstractmethod
    def prepare(self, incoming: IncomingMessage) -> Rows:
        """A message's rows as this backend binds them: all the Python work of a store,
        run by the caller (the event loop)."""

    @abstractmethod
    async def store_prepared(self, batch: Sequence[Rows]
                             ) -> builtins.list[StoreResult | Exception]:
        """Store prepared messages in one transaction, each behind a savepoint; one result
        each."""

    @abstractmethod
    async def check_writable(self) -> None:
        """Raise :class:`InboxError` unless a write transaction can be opened now."""

    @abstractmethod
    async def list(self, *, limit: int, after_id: int = 0, state: State | None = None,
                   conflicted: bool = False,
                   since: dt.datetime | None = None) -> builtins.list[StoredNotification]:
        """Stored notifications in arrival order, after ``after_id``, optionally by state,
        (``conflicted``) only those with conflicting redeliveries, or only those received
        at ``since`` or later."""

    @abstractmethod
    async def get(self, inbox_id: int) -> StoredNotification | None:
        """One stored notification by its inbox ID."""

    @abstractmethod
    async def conflicts(self, inbox_id: int,
                        limit: int | None = None) -> builtins.list[RecordedConflict]:
        """The conflicting redeliveries of one notification, in arrival order (the first
        ``limit``)."""

    @abstractmethod
    async def events(self, inbox_id: int, *, limit: int) -> builtins.list[DeliveryEvent]:
        """One notification's latest delivery events (at most ``limit``), in time order."""

    @abstractmethod
    async def claim(self, *, limit: int, lease_seconds: float,
                    now: dt.datetime) -> builtins.list[StoredNotification]:
        """Pending notifications due now whose record has no earlier pending one; each is
        leased so no other worker takes it until the lease ends."""

    @abstractmethod
    async def prepare_delivery(self) -> None:
        """Build what claims need (:data:`DELIVERY_INDEX`) unless it is there; on a large
        inbox that first build holds stores back while it runs."""

    @abstractmethod
    async def mark_delivered(self, inbox_id: int, now: dt.datetime) -> None:
        """Delivered: never handed out again."""

    @abstractmethod
    async def mark_failed(self, inbox_id: int, error: str, *, retry_at: dt.datetime | None,
                          now: dt.datetime) -> None:
        """One more failed attempt; ``retry_at`` None means give up (dead letter)."""

    @abstractmethod
    async def retry(self, inbox_id: int | None, now: dt.datetime, *,
                    through_id: int | None = None) -> int:
        """Make one notification (or, with None, every dead one, up to ``through_id``)
        pending again; how many. Each gets a ``retried`` delivery event."""

    @abstractmethod
    async def stats(self) -> InboxStats:
        """Backlog figures for metrics."""

    @abstractmethod
    async def recent(self, *, limit: int, state: State | None = None, key: str | None = None,
                     before_id: int | None = None,
                     after_id: int | None = None) -> builtins.list[ListedNotification]:
        """The latest notifications first, optionally by state or by a record or
        notification Id (``key``); a page: those below ``before_id``, or the ``limit`` just
        above ``after_id``."""

    @abstractmethod
    async def count(self, *, state: State | None = None, key: str | None = None,
                    after_id: int | None = None) -> int:
        """How many notifications :meth:`recent` could page through (above ``after_id``)."""

    async def close(self) -> None:
        """Every pending store has its answer when this returns: one whose commit had not
        ended fails (InboxError; Salesforce retries what was not acknowledged)."""
        if self._committer is not None:
            await self._committer.close()


class ChainStore(ABC):
    """The chain registry: what workers and replicas add of the client chains they saw,
    and the decisions made about them per hour."""

    @abstractmethod
    async def record_chains(self, sightings: Sequence[ChainSighting],
                            hours: Sequence[HourCount]) -> list[str]:
        """Add one flush of the chain registry, in one transaction; the fingerprints of
        the sightings without certificates that found no recorded chain to add to."""

    chain_sql: ChainStatements  # the backend's spelling of the registry's statements

    @abstractmethod
    async def _read_chains(self, statement: str, endpoints: str,
                           parameters: dict[str, Any]) -> list[ChainRecord]:
        """The chains ``statement`` selects, with the endpoint rows ``endpoints`` selects
        for them (both bound to ``parameters``)."""

    async def chains(self, *, since: dt.datetime, limit: int) -> list[ChainRecord]:
        """Chains last seen since ``since``, the latest first."""
        return await self._read_chains(self.chain_sql.recent, self.chain_sql.endpoints_since,
                                       {"since": since, "limit": limit})

    async def chains_by_prefix(self, prefix: str) -> list[ChainRecord]:
        """Chains whose fingerprint starts with ``prefix`` (a few at most)."""
        return await self._read_chains(self.chain_sql.by_prefix,
                                       self.chain_sql.endpoints_by_prefix,
                                       {"prefix": prefix_pattern(prefix)})

    @abstractmethod
    async def decisions_since(self, since: dt.datetime) -> dict[str, int]:
        """Client-certificate decisions since ``since`` (whole hours), by outcome."""

    @abstractmethod
    async def decision_hours(self, since: dt.datetime,
                             limit: int) -> list[HourCount]:
        """Decisions per hour, endpoint and outcome since ``since``, the latest hour first
        (at most ``limit`` rows)."""

    @abstractmethod
    async def forget_chains(self, before: dt.datetime) -> None:
        """Remove chains last seen, and decision counts, before ``before``."""


class Inbox(NotificationStore, ChainStore):
    """Durable storage behind one interface: SQLite (embedded) and PostgreSQL (shared);
    the notifications and the chain registry in one database, with one schema."""

    @abstractmethod
    async def migrate(self) -> int:
        """Create or upgrade the schema; the version it is at afterwards."""

    async def close(self) -> None:
        """Release connections; pending stores have finished when this returns."""
        await super().close()
