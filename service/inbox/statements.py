"""The SQL of notifications and their delivery, written once for both backends: each
builder takes the backend's :class:`Dialect`."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from service.inbox.dialect import Dialect
from service.inbox.encoding import CONFLICT_COLUMNS, CONTENT_COLUMNS, Rows
from service.inbox.model import DEAD, PENDING, State
from service.soap import id_key

# What a read returns (StoredNotification's fields), and what a store writes (row_values).
SELECT_COLUMNS = (
    "id", "endpoint", "organization_id", "action_id", "notification_id", "sobject_type",
    "record_id", "fields", "received_at", "enterprise_url", "partner_url", "session_id",
    "state", "attempts", "last_error", "delivered_at", "content_sha256", "conflicts",
    "chain_sha256",
)
LISTED_COLUMNS = (
    "id", "endpoint", "notification_id", "sobject_type", "record_id", "received_at", "state",
    "attempts", "last_error",
)
INSERT_COLUMNS = (
    "org_key", "notification_key", "organization_id", "action_id", "notification_id",
    "sobject_type", "record_id", "record_key", "fields", "endpoint", "enterprise_url",
    "partner_url", "session_id", "received_at", "content_sha256", "chain_sha256",
)
# INSERT_COLUMNS split: those the notifications of one message share (row_values' shared
# part), and each notification's own.
MESSAGE_COLUMNS = (
    "org_key", "organization_id", "action_id", "endpoint", "enterprise_url", "partner_url",
    "session_id", "received_at", "chain_sha256",
)
NOTIFICATION_COLUMNS = tuple(name for name in INSERT_COLUMNS if name not in MESSAGE_COLUMNS)
_MESSAGE_VALUES = itemgetter(*MESSAGE_COLUMNS)
_NOTIFICATION_VALUES = itemgetter(*NOTIFICATION_COLUMNS)
DIGEST_PAGE = 500  # rows given a digest per statement when an inbox is migrated

# What keeps a record's deliveries in order fast: the claim's "no earlier pending
# notification for the same record" looks it up. Only a claim reads it, so an inbox that
# nothing delivers from does not keep it: on every store it cost a write at a random place
# (about 40% of storing a 100-notification message). Only pending rows are in it.
DELIVERY_INDEX = ("CREATE INDEX IF NOT EXISTS notifications_pending_record "
                  f"ON notifications (org_key, record_key, id) WHERE state = '{PENDING}'")


def claimable_condition(dialect: Dialect) -> str:
    """Which notifications (``n``) a claim may hand out: pending, due, not leased, and with
    no earlier pending notification for the same record. That last clause *is* the
    ordering guarantee of delivery, so both backends use this one text."""
    now = dialect.named("now")
    return (f"n.state = '{PENDING}' AND n.next_attempt_at <= {now}"  # noqa: S608 - constants
            f" AND (n.lease_until IS NULL OR n.lease_until < {now})"
            " AND (n.record_key IS NULL OR NOT EXISTS ("
            "SELECT 1 FROM notifications AS o"
            " WHERE o.org_key = n.org_key AND o.record_key = n.record_key"
            f" AND o.id < n.id AND o.state = '{PENDING}'))")


def _insert(values: str) -> str:
    """The deduplicating INSERT of INSERT_COLUMNS and next_attempt_at (received_at's value)."""
    names = ", ".join(INSERT_COLUMNS)
    return (f"INSERT INTO notifications ({names}, next_attempt_at) "  # noqa: S608 - constants
            f"VALUES {values} ON CONFLICT (org_key, notification_key) DO NOTHING")


def insert_statement(dialect: Dialect) -> str:
    """The deduplicating INSERT of one notification, its parameters named."""
    return _insert(f"({dialect.named(*INSERT_COLUMNS)}, {dialect.named('received_at')})")


# A message's notifications are inserted by statements of these sizes (100: 64 + 32 + 4),
# so that a backend's cache of statements holds every one of them.
ROWS_PER_INSERT = (64, 32, 16, 8, 4, 2, 1)


def row_chunks(rows: Rows) -> Iterator[Rows]:
    """``rows`` in order, in parts of the ROWS_PER_INSERT sizes."""
    start = 0
    while start < len(rows):
        count = next(size for size in ROWS_PER_INSERT if size <= len(rows) - start)
        yield rows[start:start + count]
        start += count


def insert_rows_statement(dialect: Dialect, count: int) -> str:
    """The deduplicating INSERT of ``count`` notifications of one message, in the order
    given: MESSAGE_COLUMNS' parameters once, then each notification's NOTIFICATION_COLUMNS
    in turn; numbered where the dialect numbers parameters (1, 2, ...), else named
    (``org_key``, ..., then ``notification_key_0``, ...: :func:`named_row_parameters`)."""
    if count < 1:
        raise ValueError(f"an INSERT of {count} rows")
    style, shared, own = dialect.numbered_style, len(MESSAGE_COLUMNS), len(NOTIFICATION_COLUMNS)

    def parameter(name: str, row: int) -> str:
        if style is None:
            return dialect.named(name if name in MESSAGE_COLUMNS else f"{name}_{row}")
        if name in MESSAGE_COLUMNS:
            return style.format(MESSAGE_COLUMNS.index(name) + 1)
        return style.format(shared + row * own + NOTIFICATION_COLUMNS.index(name) + 1)

    return _insert(", ".join(
        "(" + ", ".join(parameter(name, row) for name in (*INSERT_COLUMNS, "received_at")) + ")"
        for row in range(count)))


def numbered_row_parameters(rows: Rows) -> list[Any]:
    """The numbered parameters of :func:`insert_rows_statement` for ``rows`` of one
    message."""
    parameters = list(_MESSAGE_VALUES(rows[0]))
    for row in rows:
        parameters += _NOTIFICATION_VALUES(row)
    return parameters


def named_row_parameters(rows: Rows) -> dict[str, Any]:
    """The named parameters of :func:`insert_rows_statement` for ``rows`` of one message."""
    parameters = {name: rows[0][name] for name in MESSAGE_COLUMNS}
    for number, row in enumerate(rows):
        parameters.update({f"{name}_{number}": row[name] for name in NOTIFICATION_COLUMNS})
    return parameters


@dataclass(frozen=True)
class ConflictStatements:
    """SQL both backends share for redeliveries whose content differs; built by
    :func:`conflict_statements` in the backend's dialect."""

    stored: str  # the notification a duplicate collided with (by org_key, notification_key)
    record: str  # one conflicting redelivery, and what it said
    count: str  # one more conflict on the stored notification (by id)
    of_notification: str  # the recorded conflicts of one notification (by inbox_id)
    undigested: str  # rows stored before digests were kept (migration)
    set_digest: str  # one row's digest (by id, content_sha256)


def conflict_statements(dialect: Dialect) -> ConflictStatements:
    named = dialect.named
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


def list_filter(dialect: Dialect, after_id: int, state: State | None, conflicted: bool,
                since: Any = None) -> tuple[str, list[Any]]:
    """The WHERE clause of :meth:`NotificationStore.list` and its parameters, by position
    (``since`` as the backend stores received_at)."""
    parameter = dialect.positional
    clauses = [f"id > {parameter}"]
    parameters: list[Any] = [after_id]
    if state is not None:
        clauses.append(f"state = {parameter}")
        parameters.append(state)
    if conflicted:
        clauses.append("conflicts > 0")
    if since is not None:
        clauses.append(f"received_at >= {parameter}")
        parameters.append(since)
    return " AND ".join(clauses), parameters


def recent_filter(dialect: Dialect, state: State | None, key: str | None, *,
                  before_id: int | None = None, after_id: int | None = None
                  ) -> tuple[str, list[Any]]:
    """The WHERE clause of :meth:`NotificationStore.recent` (and ``count``) and its
    parameters, by position: by state, by a record or notification Id (either length:
    compared on the 15-character form), and below or above an inbox id (a page's edge)."""
    parameter = dialect.positional
    clauses: list[str] = ["1 = 1"]
    parameters: list[Any] = []
    if state is not None:
        clauses.append(f"state = {parameter}")
        parameters.append(state)
    if key:
        clauses.append(f"(record_key = {parameter} OR notification_key = {parameter})")
        parameters += [id_key(key), id_key(key)]
    for operator, edge in (("<", before_id), (">", after_id)):
        if edge is not None:
            clauses.append(f"id {operator} {parameter}")
            parameters.append(edge)
    return " AND ".join(clauses), parameters


def recent_statement(dialect: Dialect, where: str, *, upward: bool) -> str:
    """The latest notifications matching ``where`` first, at most the last parameter's
    number; ``upward`` (a page above an id): the ones just above it, still latest first."""
    columns, limit = ", ".join(LISTED_COLUMNS), dialect.positional
    if upward:
        return (f"SELECT {columns} FROM (SELECT {columns} FROM notifications "  # noqa: S608
                f"WHERE {where} ORDER BY id LIMIT {limit}) AS page ORDER BY id DESC")
    return (f"SELECT {columns} FROM notifications WHERE {where} "  # noqa: S608 - constants
            f"ORDER BY id DESC LIMIT {limit}")


@dataclass(frozen=True)
class EventStatements:
    """SQL both backends share for delivery events; built by :func:`event_statements`."""

    record: str  # one event (inbox_id, at, kind, error)
    latest: str  # one notification's latest events, newest first (inbox_id, limit)


def event_statements(dialect: Dialect) -> EventStatements:
    named = dialect.named
    return EventStatements(
        record="INSERT INTO delivery_events (inbox_id, at, kind, error) "  # noqa: S608
               f"VALUES ({named('inbox_id', 'at', 'kind', 'error')})",
        latest="SELECT at, kind, error FROM delivery_events "  # noqa: S608 - constants
               f"WHERE inbox_id = {named('inbox_id')} ORDER BY id DESC LIMIT {named('limit')}",
    )


def retry_statements(dialect: Dialect, inbox_id: int | None,
                     through_id: int | None) -> tuple[str, str]:
    """What :meth:`NotificationStore.retry` runs, in one transaction: a ``retried`` event
    for each notification it makes pending again, then the update (parameters ``now``,
    ``id``, ``through``)."""
    named = dialect.named
    if inbox_id is not None:
        # not one a worker holds (its lease not over): it would be handed out again while
        # its attempt still runs
        where = (f"id = {named('id')} AND (lease_until IS NULL "
                 f"OR lease_until < {named('now')})")
    else:
        where = f"state = '{DEAD}'"
        if through_id is not None:
            where += f" AND id <= {named('through')}"
    return (f"INSERT INTO delivery_events (inbox_id, at, kind) "  # noqa: S608 - constants
            f"SELECT id, {named('now')}, 'retried' FROM notifications WHERE {where}",
            f"UPDATE notifications SET state = '{PENDING}', "  # noqa: S608 - constants
            f"next_attempt_at = {named('now')}, lease_until = NULL WHERE {where}")
