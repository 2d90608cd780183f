"""The SQLite inbox: notifications and their delivery in one file, with the chain registry
beside them (``sqlite_chains``), over one connection on one thread (``sqlite_database``)."""

from __future__ import annotations

import builtins
import datetime as dt
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from service.inbox.dialect import SQLITE
from service.inbox.encoding import (
    Rows,
    delivery_event,
    listed_notification,
    recorded_conflict,
    row_values,
    stored_notification,
)
from service.inbox.model import (
    DEAD,
    DELIVERED,
    PENDING,
    DeliveryEvent,
    InboxStats,
    IncomingMessage,
    ListedNotification,
    RecordedConflict,
    State,
    StoredNotification,
    StoreResult,
)
from service.inbox.sqlite_chains import SqliteChainStore
from service.inbox.sqlite_database import SqliteDatabase, timestamp, with_timestamps
from service.inbox.statements import (
    DELIVERY_INDEX,
    ROWS_PER_INSERT,
    SELECT_COLUMNS,
    claimable_condition,
    conflict_statements,
    event_statements,
    insert_rows_statement,
    insert_statement,
    list_filter,
    numbered_row_parameters,
    recent_filter,
    recent_statement,
    retry_statements,
    row_chunks,
)
from service.inbox.storeplan import store_plan
from service.inbox.stores import Inbox, NotificationStore

_INSERT = insert_statement(SQLITE)
_INSERT_ROWS = {count: insert_rows_statement(SQLITE, count) for count in ROWS_PER_INSERT}
_CONFLICTS = conflict_statements(SQLITE)
_EVENTS = event_statements(SQLITE)

_COLUMNS = ", ".join(SELECT_COLUMNS)

# Due, not leased, and no earlier pending notification for the same record.
CLAIMABLE = (f"SELECT {_COLUMNS} FROM notifications AS n "  # noqa: S608 - constants only
             f"WHERE {claimable_condition(SQLITE)} ORDER BY n.id LIMIT :limit")


def _rows(incoming: IncomingMessage) -> Rows:
    rows = row_values(incoming)
    received_at = timestamp(incoming.received_at)
    for row in rows:
        row["received_at"] = received_at
    return rows


def _stored(row: sqlite3.Row) -> StoredNotification:
    return stored_notification(dict(row))


def _insert_message(connection: sqlite3.Connection, rows: Rows) -> int:
    """One message's rows (made by one row_values: their MESSAGE_COLUMNS are the same),
    inserted in order; the number that were new. A statement of many rows costs about half
    as much as a step per row: the values the rows share are bound once, and the
    interpreter's lock goes to this thread and back once a statement, not once a row."""
    return sum(connection.execute(_INSERT_ROWS[len(chunk)],
                                  numbered_row_parameters(chunk)).rowcount
               for chunk in row_chunks(rows))


def _all_new(connection: sqlite3.Connection,
             messages: Sequence[Rows]) -> list[StoreResult | Exception] | None:
    """Every message's rows behind one savepoint, kept when every row was new (nearly
    always); None, with nothing kept, when one was not or a statement failed: the messages
    are then stored one by one, each behind its own savepoint, to tell each its result.
    (Three statements a message, each handing the interpreter's lock to this thread and
    back, cost more than the rows.)"""
    connection.execute("SAVEPOINT batch")
    try:
        inserted = sum(_insert_message(connection, rows) for rows in messages)
    except sqlite3.Error:
        if not connection.in_transaction:  # SQLite rolled it all back (a full disk): say so
            raise
        inserted = -1
    if inserted == sum(len(rows) for rows in messages):
        connection.execute("RELEASE batch")
        return [StoreResult(len(rows), 0) for rows in messages]
    connection.execute("ROLLBACK TO batch")
    connection.execute("RELEASE batch")
    return None


class SqliteInbox(SqliteChainStore, Inbox):
    # Signatures spell ``builtins.list``: the method ``list`` shadows it (see
    # NotificationStore).

    def __init__(self, path: Path, *, group_commit: bool = True,
                 busy_timeout_ms: int = 10000, create_folder: bool = True) -> None:
        SqliteDatabase.__init__(self, path, busy_timeout_ms=busy_timeout_ms,
                                create_folder=create_folder)
        NotificationStore.__init__(self, group_commit=group_commit)

    def prepare(self, incoming: IncomingMessage) -> Rows:
        # on the event loop: in the inbox thread this Python work would hold the GIL the
        # loop waits for, and delay the commit
        return _rows(incoming)

    async def store_prepared(self, batch: Sequence[Rows]
                             ) -> builtins.list[StoreResult | Exception]:
        return await self._run(self._store_batch, batch)

    def _store_batch(self, messages: Sequence[Rows]) -> builtins.list[StoreResult | Exception]:
        """On the inbox thread: one transaction, a savepoint per message."""
        def store_all(connection: sqlite3.Connection) -> list[StoreResult | Exception]:
            all_new = _all_new(connection, messages) if len(messages) > 1 else None
            if all_new is not None:
                return all_new
            results: list[StoreResult | Exception] = []
            for rows in messages:
                connection.execute("SAVEPOINT message")
                try:
                    results.append(self._store_rows(connection, rows))
                except sqlite3.Error as error:
                    if not connection.in_transaction:  # all rolled back: the cause, not
                        raise  # "no such savepoint"
                    connection.execute("ROLLBACK TO message")
                    results.append(self._error(error))
                connection.execute("RELEASE message")
            return results

        return self._transaction(store_all)

    @staticmethod
    def _store_rows(connection: sqlite3.Connection, rows: Rows) -> StoreResult:
        """All rows in a few statements when all are new (nearly always); otherwise again
        one at a time, to tell the duplicates and conflicts apart."""
        if _insert_message(connection, rows) == len(rows):
            return StoreResult(len(rows), 0)
        connection.execute("ROLLBACK TO message")
        plan = store_plan(rows, _INSERT, _CONFLICTS)
        answer: Any = None
        try:
            while True:
                step = plan.send(answer)
                cursor = connection.execute(step.sql, step.parameters)
                answer = dict(cursor.fetchone()) if step.fetch else cursor.rowcount
        except StopIteration as done:  # the plan's return value
            result: StoreResult = done.value
            return result

    def _check_writable(self) -> None:
        connection = self._connect()
        connection.execute("BEGIN IMMEDIATE")
        try:
            connection.execute("UPDATE heartbeat SET at = datetime('now') WHERE id = 1")
        finally:
            connection.execute("ROLLBACK")

    async def check_writable(self) -> None:
        await self._run(self._check_writable)

    async def list(self, *, limit: int, after_id: int = 0, state: State | None = None,
                   conflicted: bool = False,
                   since: dt.datetime | None = None) -> builtins.list[StoredNotification]:
        where, parameters = list_filter(SQLITE, after_id, state, conflicted,
                                        None if since is None else timestamp(since))
        rows = await self._query(
            f"SELECT {_COLUMNS} FROM notifications WHERE {where} ORDER BY id LIMIT ?",  # noqa: S608
            (*parameters, limit))
        return [_stored(row) for row in rows]

    async def get(self, inbox_id: int) -> StoredNotification | None:
        rows = await self._query(
            f"SELECT {_COLUMNS} FROM notifications WHERE id = ?", (inbox_id,))  # noqa: S608
        return _stored(rows[0]) if rows else None

    async def conflicts(self, inbox_id: int,
                        limit: int | None = None) -> builtins.list[RecordedConflict]:
        statement = _CONFLICTS.of_notification + ("" if limit is None else " LIMIT :limit")
        rows = await self._query(statement, {"inbox_id": inbox_id, "limit": limit})
        return [recorded_conflict(dict(row)) for row in rows]

    async def events(self, inbox_id: int, *, limit: int) -> builtins.list[DeliveryEvent]:
        rows = await self._query(_EVENTS.latest, {"inbox_id": inbox_id, "limit": limit})
        return [delivery_event(dict(row)) for row in reversed(rows)]

    async def claim(self, *, limit: int, lease_seconds: float,
                    now: dt.datetime) -> builtins.list[StoredNotification]:
        def claim(connection: sqlite3.Connection) -> list[StoredNotification]:
            rows = connection.execute(CLAIMABLE, {"now": timestamp(now), "limit": limit})
            claimed = [_stored(row) for row in rows]
            lease = timestamp(now + dt.timedelta(seconds=lease_seconds))
            connection.executemany("UPDATE notifications SET lease_until = ? WHERE id = ?",
                                   [(lease, item.id) for item in claimed])
            return claimed

        return await self._write(claim)

    async def prepare_delivery(self) -> None:
        await self._write(lambda connection: connection.execute(DELIVERY_INDEX))

    async def _update(self, statement: str, parameters: dict[str, Any],
                      event: dict[str, Any]) -> None:
        """One notification's change and, when it is stored, the delivery event it makes."""
        def change(connection: sqlite3.Connection) -> None:
            if connection.execute(statement, parameters).rowcount:
                connection.execute(_EVENTS.record, with_timestamps(event))

        await self._write(change)

    async def mark_delivered(self, inbox_id: int, now: dt.datetime) -> None:
        await self._update(
            "UPDATE notifications SET state = :state, delivered_at = :now, "
            "attempts = attempts + 1, lease_until = NULL, last_error = NULL WHERE id = :id",
            {"state": DELIVERED, "now": timestamp(now), "id": inbox_id},
            {"inbox_id": inbox_id, "at": now, "kind": "delivered", "error": None})

    async def mark_failed(self, inbox_id: int, error: str, *, retry_at: dt.datetime | None,
                          now: dt.datetime) -> None:
        state = PENDING if retry_at is not None else DEAD
        await self._update(
            "UPDATE notifications SET state = :state, attempts = attempts + 1, "
            "last_error = :error, lease_until = NULL, next_attempt_at = :retry WHERE id = :id",
            {"state": state, "error": error[:2000], "id": inbox_id,
             "retry": timestamp(retry_at or now)},
            {"inbox_id": inbox_id, "at": now, "kind": "failed" if retry_at else "dead",
             "error": error[:2000]})

    async def retry(self, inbox_id: int | None, now: dt.datetime, *,
                    through_id: int | None = None) -> int:
        events, update = retry_statements(SQLITE, inbox_id, through_id)
        parameters = {"now": timestamp(now), "id": inbox_id, "through": through_id}

        def retry(connection: sqlite3.Connection) -> int:
            connection.execute(events, parameters)
            return connection.execute(update, parameters).rowcount

        return await self._write(retry)

    async def stats(self) -> InboxStats:
        [row] = await self._query(
            f"SELECT SUM(state = '{PENDING}'), SUM(state = '{DEAD}'), "  # noqa: S608
            f"MIN(CASE WHEN state = '{PENDING}' THEN received_at END) FROM notifications", ())
        oldest = dt.datetime.fromisoformat(row[2]) if row[2] else None
        return InboxStats(pending=row[0] or 0, dead=row[1] or 0,
                          oldest_pending_received_at=oldest)

    async def recent(self, *, limit: int, state: State | None = None, key: str | None = None,
                     before_id: int | None = None,
                     after_id: int | None = None) -> builtins.list[ListedNotification]:
        where, parameters = recent_filter(SQLITE, state, key, before_id=before_id,
                                          after_id=after_id)
        rows = await self._query(recent_statement(SQLITE, where, upward=after_id is not None),
                                 (*parameters, limit))
        return [listed_notification(dict(row)) for row in rows]

    async def count(self, *, state: State | None = None, key: str | None = None,
                    after_id: int | None = None) -> int:
        where, parameters = recent_filter(SQLITE, state, key, after_id=after_id)
        [row] = await self._query(
            f"SELECT count(*) FROM notifications WHERE {where}", parameters)  # noqa: S608
        return int(row[0])

    async def close(self) -> None:
        await super().close()
        await self._release()

