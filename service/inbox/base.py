"""The inbox interface: durable storage of notifications and their delivery state.

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

import asyncio
import builtins
import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

import orjson

from service.inbox.chains import ChainRecord, ChainSighting, HourCount
from service.soap import FieldValue, Notification, OutboundMessage, id_key

PENDING, DELIVERED, DEAD = "pending", "delivered", "dead"
# What a read returns (StoredNotification's fields), and what a store writes (row_values).
SELECT_COLUMNS = (
    "id", "endpoint", "organization_id", "action_id", "notification_id", "sobject_type",
    "record_id", "fields", "received_at", "enterprise_url", "partner_url", "session_id",
    "state", "attempts", "last_error", "delivered_at", "content_sha256", "conflicts",
    "chain_sha256",
)
INSERT_COLUMNS = (
    "org_key", "notification_key", "organization_id", "action_id", "notification_id",
    "sobject_type", "record_id", "record_key", "fields", "endpoint", "enterprise_url",
    "partner_url", "session_id", "received_at", "content_sha256", "chain_sha256",
)
# What a notification says, for its digest: not who sent it when, nor the SessionId.
CONTENT_COLUMNS = ("endpoint", "action_id", "sobject_type", "record_id", "fields")
CONFLICT_COLUMNS = ("content_sha256", *CONTENT_COLUMNS, "received_at")
DIGEST_PAGE = 500  # rows given a digest per statement when an inbox is migrated


def claimable_condition(placeholder: str) -> str:
    """Which notifications (``n``) a claim may hand out: pending, due, not leased, and with
    no earlier pending notification for the same record. That last clause *is* the
    ordering guarantee of delivery, so both backends use this one text."""
    now = placeholder.format("now")
    return (f"n.state = '{PENDING}' AND n.next_attempt_at <= {now}"  # noqa: S608 - constants
            f" AND (n.lease_until IS NULL OR n.lease_until < {now})"
            " AND (n.record_key IS NULL OR NOT EXISTS ("
            "SELECT 1 FROM notifications AS o"
            " WHERE o.org_key = n.org_key AND o.record_key = n.record_key"
            f" AND o.id < n.id AND o.state = '{PENDING}'))")


def insert_statement(placeholder: str) -> str:
    """The deduplicating INSERT, with ``placeholder`` formatting a parameter name."""
    names = ", ".join(INSERT_COLUMNS)
    values = ", ".join(placeholder.format(name) for name in INSERT_COLUMNS)
    return (f"INSERT INTO notifications ({names}, next_attempt_at) "  # noqa: S608 - constants
            f"VALUES ({values}, {placeholder.format('received_at')}) "
            "ON CONFLICT (org_key, notification_key) DO NOTHING")


STATES = (PENDING, DELIVERED, DEAD)
GROUP_COMMIT_LIMIT = 256  # messages in one transaction at the most


class InboxError(Exception):
    """The inbox could not do what was asked; the message says why."""


class MissingFolderError(InboxError):
    """A SQLite inbox whose folder does not exist, where it was not to be created: a
    mistyped inbox.url would otherwise start an inbox nobody reads."""

    def __init__(self, database: Path) -> None:
        folder = database.parent
        super().__init__(
            f"the folder {folder} does not exist, so the inbox {database} cannot be created "
            f"there: correct the URL, or create the folder (`mkdir -p {folder}`; `omgate "
            "serve --create-inbox-dir` creates it at start)")
        self.folder = folder


@dataclass(frozen=True)
class IncomingMessage:
    """A parsed message plus what the receiver knows about its arrival."""

    message: OutboundMessage
    endpoint: str
    received_at: dt.datetime
    keep_session_id: bool = False
    # the client chain it arrived with (the registry's key; None: none was asked for)
    chain_sha256: str | None = None


@dataclass(frozen=True)
class DuplicateConflict:
    """A redelivery of a stored notification that says something else."""

    inbox_id: int  # the notification stored first, which stays as it is
    notification_id: str
    stored_sha256: str
    redelivered_sha256: str


@dataclass(frozen=True)
class StoreResult:
    new: int
    duplicates: int  # redeliveries identical to what is stored
    conflicts: tuple[DuplicateConflict, ...] = ()  # redeliveries that differ


@dataclass(frozen=True)
class StoredNotification:
    id: int
    endpoint: str
    organization_id: str
    action_id: str
    notification_id: str
    sobject_type: str | None
    record_id: str | None
    fields: dict[str, Any]
    received_at: str
    enterprise_url: str | None
    partner_url: str | None
    session_id: str | None
    state: str = PENDING
    attempts: int = 0
    last_error: str | None = None
    delivered_at: str | None = None
    content_sha256: str | None = None  # None: stored by an omgate that kept no digest
    conflicts: int = 0  # redeliveries whose content differed
    # the client chain it arrived with, as the registry keys it (None: no certificate was
    # asked for, or stored before schema version 6); the console links it, no JSON has it
    chain_sha256: str | None = None

    def to_json(self) -> dict[str, Any]:
        document = {
            "id": self.id,
            "organization_id": self.organization_id,
            "action_id": self.action_id,
            "notification_id": self.notification_id,
            "sobject_type": self.sobject_type,
            "record_id": self.record_id,
            "fields": self.fields,
            "received_at": self.received_at,
            "endpoint": self.endpoint,
            "enterprise_url": self.enterprise_url,
            "partner_url": self.partner_url,
            "state": self.state,
            "attempts": self.attempts,
            "last_error": self.last_error,
            "delivered_at": self.delivered_at,
            "content_sha256": self.content_sha256,
            "conflicts": self.conflicts,
        }
        if self.session_id is not None:
            document["session_id"] = self.session_id
        return document

    def delivery_document(self) -> dict[str, Any]:
        """What a webhook or handler receives: the notification, without delivery state."""
        return {key: value for key, value in self.to_json().items()
                if key not in ("state", "attempts", "last_error", "delivered_at",
                               "content_sha256", "conflicts")}


@dataclass(frozen=True)
class RecordedConflict:
    """What a conflicting redelivery said (the stored notification stays the first)."""

    content_sha256: str
    endpoint: str
    action_id: str
    sobject_type: str | None
    record_id: str | None
    fields: dict[str, Any]
    received_at: str

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def recorded_conflict(row: Mapping[str, Any]) -> RecordedConflict:
    values = dict(row)
    values["fields"] = json.loads(values["fields"])
    values["received_at"] = isoformat(values["received_at"])
    return RecordedConflict(**values)


@dataclass(frozen=True)
class InboxStats:
    pending: int
    dead: int
    oldest_pending_received_at: dt.datetime | None


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"cannot store a {type(value).__name__} as JSON")


_PLAIN_TYPES = frozenset((str, int, bool, type(None)))


def _plain(value: Any) -> bool:
    """Only text, whole numbers, booleans and nulls (nested or not): what orjson writes
    exactly as json.dumps does (a float it may write otherwise, a date it would not call
    _json_default for)."""
    if type(value) is not dict:
        return type(value) in _PLAIN_TYPES
    for item in value.values():
        if type(item) not in _PLAIN_TYPES and not (type(item) is dict and _plain(item)):
            return False
    return True


def _json(value: Any, *, sort_keys: bool = False, plain: bool | None = None) -> str:
    """Compact JSON, non-ASCII as is: json.dumps's text, by orjson where it is the same
    (fields without a WSDL's types: nearly always). ``plain``: what :func:`_plain` says of
    ``value``, when the caller knows it."""
    if _plain(value) if plain is None else plain:
        with contextlib.suppress(orjson.JSONEncodeError):  # an integer past 64 bits
            return orjson.dumps(value, option=orjson.OPT_SORT_KEYS if sort_keys else 0).decode()
    return json.dumps(value, default=_json_default, ensure_ascii=False, separators=(",", ":"),
                      sort_keys=sort_keys)


def encode_fields(fields: dict[str, FieldValue]) -> str:
    """Fields as JSON: numbers and booleans stay typed, dates become ISO 8601 strings."""
    return _json(fields)


def isoformat(value: Any) -> str | None:
    if value is None:
        return None
    return value.isoformat() if isinstance(value, dt.datetime) else str(value)


def _digest(content: Mapping[str, Any], *, plain: bool | None = None) -> str:
    return hashlib.sha256(_json(content, sort_keys=True, plain=plain).encode()).hexdigest()


def content_digest(row: Mapping[str, Any]) -> str:
    """SHA-256 of a canonical encoding of what a notification says: its CONTENT_COLUMNS as
    stored (so a row about to be stored and one read back give the same digest), the
    fields by value whatever their order."""
    content = {name: row[name] for name in CONTENT_COLUMNS}
    content["fields"] = json.loads(row["fields"])
    return _digest(content)


def conflict_with(row: Mapping[str, Any], stored: Mapping[str, Any]) -> DuplicateConflict | None:
    """The conflict a duplicate ``row`` makes with the ``stored`` notification, if it differs."""
    stored_sha256 = stored["content_sha256"] or content_digest(stored)
    if stored_sha256 == row["content_sha256"]:
        return None
    return DuplicateConflict(stored["id"], row["notification_id"], stored_sha256,
                             row["content_sha256"])


def conflict_values(conflict: DuplicateConflict, row: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters of ConflictStatements.record (and .count)."""
    return {"inbox_id": conflict.inbox_id, **{name: row[name] for name in CONFLICT_COLUMNS}}


def row_values(incoming: IncomingMessage) -> list[dict[str, Any]]:
    """One row per notification, the same for every backend."""
    message = incoming.message
    session_id = (
        message.session_id.value if incoming.keep_session_id and message.session_id else None
    )
    shared = {
        "org_key": id_key(message.organization_id),
        "organization_id": message.organization_id,
        "action_id": message.action_id,
        "endpoint": incoming.endpoint,
        "enterprise_url": message.enterprise_url,
        "partner_url": message.partner_url,
        "session_id": session_id,
        "received_at": incoming.received_at,
        "chain_sha256": incoming.chain_sha256,
    }
    return [_row(shared, notification) for notification in message.notifications]


def _row(shared: dict[str, Any], notification: Notification) -> dict[str, Any]:
    row = {
        **shared,
        "notification_key": id_key(notification.id),
        "notification_id": notification.id,
        "sobject_type": notification.sobject_type,
        "record_id": notification.record_id,
        "record_key": id_key(notification.record_id) if notification.record_id else None,
    }
    # the fields are judged plain once, for their text and for the digest (the other
    # content columns are text or null)
    plain = _plain(notification.fields)
    row["fields"] = _json(notification.fields, plain=plain)
    # content_digest(row) without decoding the fields just encoded: dumping the values
    # gives the same text as dumping what decoding them gives back.
    row["content_sha256"] = _digest({**{name: row[name] for name in CONTENT_COLUMNS},
                                     "fields": notification.fields}, plain=plain)
    return row


@dataclass(frozen=True)
class ConflictStatements:
    """SQL both backends share for redeliveries whose content differs; built by
    :func:`conflict_statements` with the backend's parameter style."""

    stored: str  # the notification a duplicate collided with (by org_key, notification_key)
    record: str  # one conflicting redelivery, and what it said
    count: str  # one more conflict on the stored notification (by id)
    of_notification: str  # the recorded conflicts of one notification (by inbox_id)
    undigested: str  # rows stored before digests were kept (migration)
    set_digest: str  # one row's digest (by id, content_sha256)


@dataclass(frozen=True)
class Statement:
    """One statement a store asks its backend to run: the answer sent back is the row it
    fetched (``fetch``), else the number of rows it changed."""

    sql: str
    parameters: Mapping[str, Any]
    fetch: bool = False


StorePlan = Generator[Statement, Any, StoreResult]


def store_plan(rows: list[dict[str, Any]], insert: str,
               conflicts: ConflictStatements) -> StorePlan:
    """How one message's rows are stored, without I/O (each backend runs the statements it
    yields): insert each; an identical redelivery is a duplicate; one whose content
    differs is recorded as a conflict and the stored notification kept."""
    new = duplicates = 0
    found: list[DuplicateConflict] = []
    for row in rows:
        if (yield Statement(insert, row)):
            new += 1
            continue
        conflict = conflict_with(row, (yield Statement(conflicts.stored, row, fetch=True)))
        if conflict is None:
            duplicates += 1
            continue
        values = conflict_values(conflict, row)
        yield Statement(conflicts.record, values)
        yield Statement(conflicts.count, values)
        found.append(conflict)
    return StoreResult(new, duplicates, tuple(found))


def conflict_statements(placeholder: str) -> ConflictStatements:
    def named(*names: str) -> str:
        return ", ".join(placeholder.format(name) for name in names)

    content, conflict = ", ".join(CONTENT_COLUMNS), ", ".join(CONFLICT_COLUMNS)
    return ConflictStatements(
        stored=f"SELECT id, content_sha256, {content} FROM notifications "  # noqa: S608
               f"WHERE org_key = {named('org_key')} "
               f"AND notification_key = {named('notification_key')}",
        record=f"INSERT INTO duplicate_conflicts (inbox_id, {conflict}) "  # noqa: S608
               f"VALUES ({named('inbox_id', *CONFLICT_COLUMNS)})",
        count=f"UPDATE notifications SET conflicts = conflicts + 1 "  # noqa: S608
              f"WHERE id = {named('inbox_id')}",
        of_notification=f"SELECT {conflict} FROM duplicate_conflicts "  # noqa: S608
                        f"WHERE inbox_id = {named('inbox_id')} ORDER BY id",
        undigested=f"SELECT id, {content} FROM notifications "  # noqa: S608
                   f"WHERE content_sha256 IS NULL ORDER BY id LIMIT {DIGEST_PAGE}",
        set_digest=f"UPDATE notifications SET content_sha256 = "  # noqa: S608
                   f"{named('content_sha256')} WHERE id = {named('id')}",
    )


def list_filter(placeholder: str, after_id: int, state: str | None, conflicted: bool,
                since: Any = None) -> tuple[str, list[Any]]:
    """The WHERE clause of :meth:`Inbox.list` and its parameters, in order (``since`` as the
    backend stores received_at)."""
    clauses = [f"id > {placeholder}"]
    parameters: list[Any] = [after_id]
    if state is not None:
        clauses.append(f"state = {placeholder}")
        parameters.append(state)
    if conflicted:
        clauses.append("conflicts > 0")
    if since is not None:
        clauses.append(f"received_at >= {placeholder}")
        parameters.append(since)
    return " AND ".join(clauses), parameters


def notifications_migration(id_type: str, timestamp_type: str) -> list[str]:
    """Schema version 1, in a backend's column types: the notifications themselves."""
    return [f"""CREATE TABLE notifications (
            id               {id_type} PRIMARY KEY,
            org_key          TEXT NOT NULL,
            notification_key TEXT NOT NULL,
            organization_id  TEXT NOT NULL,
            action_id        TEXT NOT NULL,
            notification_id  TEXT NOT NULL,
            sobject_type     TEXT,
            record_id        TEXT,
            fields           TEXT NOT NULL,
            endpoint         TEXT NOT NULL,
            enterprise_url   TEXT,
            partner_url      TEXT,
            session_id       TEXT,
            received_at      {timestamp_type} NOT NULL,
            UNIQUE (org_key, notification_key)
        )"""]


def delivery_migration(timestamp_type: str, *, first_15: str,
                       next_attempt_at: list[str]) -> list[str]:
    """Schema version 2, in a backend's column types: delivery state (rows stored before it
    are pending delivery). ``first_15`` is the dialect's "first 15 characters of record_id"
    and ``next_attempt_at`` the statements that add that column (NOT NULL, filled in)."""
    return [
        "ALTER TABLE notifications ADD COLUMN record_key TEXT",
        f"UPDATE notifications SET record_key = {first_15} WHERE record_id IS NOT NULL",  # noqa: S608
        f"ALTER TABLE notifications ADD COLUMN state TEXT NOT NULL DEFAULT '{PENDING}'",
        "ALTER TABLE notifications ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0",
        *next_attempt_at,
        f"ALTER TABLE notifications ADD COLUMN lease_until {timestamp_type}",
        "ALTER TABLE notifications ADD COLUMN last_error TEXT",
        f"ALTER TABLE notifications ADD COLUMN delivered_at {timestamp_type}",
        "CREATE INDEX notifications_due ON notifications (state, next_attempt_at)",
        "CREATE INDEX notifications_record ON notifications (org_key, record_key, id)",
    ]


def record_index_migration() -> list[str]:
    """Schema version 5: the record index is no longer kept by every store; delivery builds
    its own (:data:`DELIVERY_INDEX`) when it starts."""
    return ["DROP INDEX IF EXISTS notifications_record"]


# What keeps a record's deliveries in order fast: the claim's "no earlier pending
# notification for the same record" looks it up. Only a claim reads it, so an inbox that
# nothing delivers from does not keep it: on every store it cost a write at a random place
# (about 40% of storing a 100-notification message). Only pending rows are in it.
DELIVERY_INDEX = ("CREATE INDEX IF NOT EXISTS notifications_pending_record "
                  f"ON notifications (org_key, record_key, id) WHERE state = '{PENDING}'")


def recent_filter(placeholder: str, state: str | None, key: str | None, *,
                  before_id: int | None = None, after_id: int | None = None
                  ) -> tuple[str, list[Any]]:
    """The WHERE clause of :meth:`Inbox.recent` (and :meth:`Inbox.count`) and its
    parameters: by state, by a record or notification Id (either length: compared on the
    15-character form), and below or above an inbox id (a page's edge)."""
    clauses: list[str] = ["1 = 1"]
    parameters: list[Any] = []
    if state is not None:
        clauses.append(f"state = {placeholder}")
        parameters.append(state)
    if key:
        clauses.append(f"(record_key = {placeholder} OR notification_key = {placeholder})")
        parameters += [id_key(key), id_key(key)]
    for operator, edge in (("<", before_id), (">", after_id)):
        if edge is not None:
            clauses.append(f"id {operator} {placeholder}")
            parameters.append(edge)
    return " AND ".join(clauses), parameters


def recent_statement(placeholder: str, where: str, *, upward: bool) -> str:
    """The latest notifications matching ``where`` first, at most the last parameter's
    number; ``upward`` (a page above an id): the ones just above it, still latest first."""
    columns = ", ".join(SELECT_COLUMNS)
    if upward:
        return (f"SELECT {columns} FROM (SELECT {columns} FROM notifications "  # noqa: S608
                f"WHERE {where} ORDER BY id LIMIT {placeholder}) AS page ORDER BY id DESC")
    return (f"SELECT {columns} FROM notifications WHERE {where} "  # noqa: S608 - constants
            f"ORDER BY id DESC LIMIT {placeholder}")


DeliveryEventKind = Literal["delivered", "failed", "dead", "retried"]


@dataclass(frozen=True)
class DeliveryEvent:
    """One step of a notification's delivery: an attempt (delivered, failed and to be tried
    again, failed for the last time: dead) or an operator's retry."""

    at: dt.datetime
    kind: DeliveryEventKind
    error: str | None


@dataclass(frozen=True)
class EventStatements:
    """SQL both backends share for delivery events; built by :func:`event_statements`."""

    record: str  # one event (inbox_id, at, kind, error)
    latest: str  # one notification's latest events, newest first (inbox_id, limit)


def event_statements(placeholder: str) -> EventStatements:
    def named(*names: str) -> str:
        return ", ".join(placeholder.format(name) for name in names)

    return EventStatements(
        record="INSERT INTO delivery_events (inbox_id, at, kind, error) "  # noqa: S608
               f"VALUES ({named('inbox_id', 'at', 'kind', 'error')})",
        latest="SELECT at, kind, error FROM delivery_events "  # noqa: S608 - constants
               f"WHERE inbox_id = {named('inbox_id')} ORDER BY id DESC LIMIT {named('limit')}",
    )


def retry_statements(placeholder: str, inbox_id: int | None,
                     through_id: int | None) -> tuple[str, str]:
    """What :meth:`Inbox.retry` runs, in one transaction: a ``retried`` event for each
    notification it makes pending again, then the update (parameters ``now``, ``id``,
    ``through``)."""
    def named(name: str) -> str:
        return placeholder.format(name)

    if inbox_id is not None:
        where = f"id = {named('id')}"
    else:
        where = f"state = '{DEAD}'"
        if through_id is not None:
            where += f" AND id <= {named('through')}"
    return (f"INSERT INTO delivery_events (inbox_id, at, kind) "  # noqa: S608 - constants
            f"SELECT id, {named('now')}, 'retried' FROM notifications WHERE {where}",
            f"UPDATE notifications SET state = '{PENDING}', "  # noqa: S608 - constants
            f"next_attempt_at = {named('now')}, lease_until = NULL WHERE {where}")


def delivery_event(row: Mapping[str, Any]) -> DeliveryEvent:
    at = row["at"]
    return DeliveryEvent(at if isinstance(at, dt.datetime) else dt.datetime.fromisoformat(at),
                         row["kind"], row["error"])


def console_migration(id_type: str, timestamp_type: str) -> list[str]:
    """Schema version 6, in a backend's column types: the chain each notification arrived
    with, and the history of its delivery (the console's page of one notification)."""
    return [
        "ALTER TABLE notifications ADD COLUMN chain_sha256 TEXT",
        f"""CREATE TABLE delivery_events (
            id               {id_type} PRIMARY KEY,
            inbox_id         BIGINT NOT NULL REFERENCES notifications (id),
            at               {timestamp_type} NOT NULL,
            kind             TEXT NOT NULL,
            error            TEXT
        )""",
        "CREATE INDEX delivery_events_notification ON delivery_events (inbox_id, id)",
    ]


def conflicts_migration(id_type: str, timestamp_type: str) -> list[str]:
    """Schema version 3, in a backend's column types: content digests and the table of
    conflicting redeliveries. Rows stored before it get their digest from
    ``ConflictStatements.undigested`` and ``.set_digest``, in the same transaction."""
    return [
        "ALTER TABLE notifications ADD COLUMN content_sha256 TEXT",
        "ALTER TABLE notifications ADD COLUMN conflicts INTEGER NOT NULL DEFAULT 0",
        f"""CREATE TABLE duplicate_conflicts (
            id               {id_type} PRIMARY KEY,
            inbox_id         BIGINT NOT NULL REFERENCES notifications (id),
            content_sha256   TEXT NOT NULL,
            endpoint         TEXT NOT NULL,
            action_id        TEXT NOT NULL,
            sobject_type     TEXT,
            record_id        TEXT,
            fields           TEXT NOT NULL,
            received_at      {timestamp_type} NOT NULL
        )""",
        "CREATE INDEX duplicate_conflicts_notification ON duplicate_conflicts (inbox_id, id)",
    ]


def digests(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The parameters of ConflictStatements.set_digest for rows stored without a digest."""
    return [{"id": row["id"], "content_sha256": content_digest(row)} for row in rows]


# One message's rows as its backend binds them, made by :meth:`Inbox.prepare`.
Rows = list[dict[str, Any]]
Prepared = TypeVar("Prepared")
BatchStore = Callable[[Sequence[Prepared]], Awaitable[list[StoreResult | Exception]]]


class GroupCommitter(Generic[Prepared]):
    """Collects concurrent stores into shared transactions, on the event loop.

    While one batch commits, newly arriving messages wait together; they form the next
    batch. Nobody waits for a timer, so a lone message is committed at once.
    """

    def __init__(self, store_batch: BatchStore[Prepared],
                 limit: int = GROUP_COMMIT_LIMIT) -> None:
        self._store_batch = store_batch
        self._limit = limit
        self._queue: asyncio.Queue[tuple[Prepared, asyncio.Future[StoreResult]]] = (
            asyncio.Queue())
        self._task: asyncio.Task[None] | None = None

    async def store(self, message: Prepared) -> StoreResult:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        future: asyncio.Future[StoreResult] = asyncio.get_running_loop().create_future()
        await self._queue.put((message, future))
        return await future

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._limit and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                results = await self._store_batch([message for message, _ in batch])
            except Exception as error:  # noqa: BLE001 - every waiter learns of the failure
                results = [error] * len(batch)
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


class Inbox(ABC):
    """Durable storage behind one interface: SQLite (embedded) and PostgreSQL (shared).

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
    async def list(self, *, limit: int, after_id: int = 0, state: str | None = None,
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
    async def recent(self, *, limit: int, state: str | None = None, key: str | None = None,
                     before_id: int | None = None,
                     after_id: int | None = None) -> builtins.list[StoredNotification]:
        """The latest notifications first, optionally by state or by a record or
        notification Id (``key``); a page: those below ``before_id``, or the ``limit`` just
        above ``after_id``."""

    @abstractmethod
    async def count(self, *, state: str | None = None, key: str | None = None,
                    after_id: int | None = None) -> int:
        """How many notifications :meth:`recent` could page through (above ``after_id``)."""

    @abstractmethod
    async def record_chains(self, sightings: Sequence[ChainSighting],
                            hours: Sequence[HourCount]) -> builtins.list[str]:
        """Add one flush of the chain registry, in one transaction; the fingerprints of
        the sightings without certificates that found no recorded chain to add to."""

    @abstractmethod
    async def chains(self, *, since: dt.datetime, limit: int) -> builtins.list[ChainRecord]:
        """Chains last seen since ``since``, the latest first."""

    @abstractmethod
    async def chains_by_prefix(self, prefix: str) -> builtins.list[ChainRecord]:
        """Chains whose fingerprint starts with ``prefix`` (a few at most)."""

    @abstractmethod
    async def decisions_since(self, since: dt.datetime) -> dict[str, int]:
        """Client-certificate decisions since ``since`` (whole hours), by outcome."""

    @abstractmethod
    async def decision_hours(self, since: dt.datetime,
                             limit: int) -> builtins.list[HourCount]:
        """Decisions per hour, endpoint and outcome since ``since``, the latest hour first
        (at most ``limit`` rows)."""

    @abstractmethod
    async def forget_chains(self, before: dt.datetime) -> None:
        """Remove chains last seen, and decision counts, before ``before``."""

    @abstractmethod
    async def migrate(self) -> int:
        """Create or upgrade the schema; the version it is at afterwards."""

    async def close(self) -> None:
        """Release connections; pending stores have finished when this returns."""
        if self._committer is not None:
            await self._committer.close()
