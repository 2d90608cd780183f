"""The PostgreSQL inbox: shared by replicas, with exactly the SQLite inbox's semantics;
notifications and their delivery here, the chain registry in ``postgres_chains``, the
pool and the schema in ``postgres_database``.

Deduplication is the same unique constraint, so a redelivery reaching another replica is
recognised too; claims use FOR UPDATE SKIP LOCKED so replicas delivering at once never
take the same notification.
"""

from __future__ import annotations

import asyncio
import builtins
import datetime as dt
import hashlib
from collections.abc import Sequence
from typing import Any

from service.inbox.dialect import POSTGRES
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
from service.inbox.postgres_chains import PostgresChainStore
from service.inbox.postgres_database import PostgresDatabase, take_migration_lock
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
    named_row_parameters,
    recent_filter,
    recent_statement,
    retry_statements,
    row_chunks,
)
from service.inbox.storeplan import store_plan
from service.inbox.stores import Inbox, NotificationStore

# /readyz is asked by anyone on the public listeners, and by probes that give up after a
# few seconds: it waits this long for a pooled connection, not the pool's 30 seconds.
READINESS_WAIT_SECONDS = 3

_INSERT = insert_statement(POSTGRES)
_INSERT_ROWS = {count: insert_rows_statement(POSTGRES, count) for count in ROWS_PER_INSERT}
_CONFLICTS = conflict_statements(POSTGRES)
_EVENTS = event_statements(POSTGRES)

_COLUMNS = ", ".join(SELECT_COLUMNS)

# Ids come from a sequence, so two transactions storing states of one record could commit
# out of id order, and a claim in between would hand out the newer state alone. A store
# takes its records' advisory locks before inserting and keeps them until commit: the
# stores of one record take their ids, and commit, one after the other.
LOCK_WAIT_MS = 5000  # then the store fails, the sender gets a fault and retries
_LOCK_RECORDS = ("SELECT count(pg_advisory_xact_lock(key)) "
                 "FROM unnest(%s::bigint[]) AS keys(key)")


def record_lock(org_key: str, record_key: str) -> int:
    """The advisory lock key of one record (64 bits of SHA-256)."""
    digest = hashlib.sha256(f"{org_key}:{record_key}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _record_locks(messages: Sequence[Rows]) -> list[int]:
    """Each record's lock once, in one global order, so two stores never deadlock."""
    keys = {record_lock(row["org_key"], row["record_key"])
            for rows in messages for row in rows if row["record_key"]}
    return sorted(keys)


CLAIM = f"""
WITH due AS (
    SELECT n.id FROM notifications AS n
    WHERE {claimable_condition(POSTGRES)}
    ORDER BY n.id LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE notifications SET lease_until = %(lease)s
FROM due WHERE notifications.id = due.id
RETURNING {", ".join(f"notifications.{column}" for column in _COLUMNS.split(", "))}
"""  # noqa: S608 - constants only


class PostgresInbox(PostgresChainStore, Inbox):
    # Signatures spell ``builtins.list``: the method ``list`` shadows it (see
    # NotificationStore).

    def __init__(self, url: str, *, group_commit: bool = True, pool_size: int = 10) -> None:
        PostgresDatabase.__init__(self, url, pool_size=pool_size)
        NotificationStore.__init__(self, group_commit=group_commit)
        self._late_checks: set[asyncio.Future[bool]] = set()  # readiness checks past their time

    def prepare(self, incoming: IncomingMessage) -> Rows:
        # as the message arrives, not with a connection and a transaction held open
        return row_values(incoming)

    async def store_prepared(self, messages: Sequence[Rows]
                             ) -> builtins.list[StoreResult | Exception]:
        import psycopg

        results: list[StoreResult | Exception] = []
        async with self._transaction() as connection:
            # a store stuck holding a record's lock must not hold up the others for good
            await connection.execute(f"SET LOCAL lock_timeout = '{LOCK_WAIT_MS}ms'")
            if locks := _record_locks(messages):
                await connection.execute(_LOCK_RECORDS, (locks,))
            for rows in messages:
                try:
                    async with connection.transaction():  # a savepoint per message
                        result = await self._store_rows(connection, rows)
                except psycopg.Error as error:
                    results.append(self._error(error))
                else:
                    results.append(result)
        return results

    @staticmethod
    async def _store_rows(connection: Any, rows: Rows) -> StoreResult:
        """Several rows in a few statements behind a savepoint when all are new (nearly
        always: a statement a row was a round trip a row); otherwise again one at a time,
        to tell the duplicates and conflicts apart."""
        import psycopg

        if len(rows) > 1:
            async with connection.transaction():
                inserted = 0
                for chunk in row_chunks(rows):
                    cursor = await connection.execute(_INSERT_ROWS[len(chunk)],
                                                      named_row_parameters(chunk))
                    inserted += cursor.rowcount
                if inserted == len(rows):
                    return StoreResult(len(rows), 0)
                raise psycopg.Rollback  # to the savepoint, and on with the plan
        plan = store_plan(rows, _INSERT, _CONFLICTS)
        answer: Any = None
        try:
            while True:
                step = plan.send(answer)
                cursor = await connection.execute(step.sql, step.parameters)
                answer = await cursor.fetchone() if step.fetch else cursor.rowcount
        except StopIteration as done:  # the plan's return value
            result: StoreResult = done.value
            return result

    async def check_writable(self) -> None:
        """Within READINESS_WAIT_SECONDS, or not ready: a server that stops answering on a
        connection the pool holds must not hold /readyz (cancelling the query waits for
        psycopg's cancellation, so the check is left to end on its own)."""
        check = asyncio.ensure_future(self._primary_or_standby())
        done, _ = await asyncio.wait({check}, timeout=READINESS_WAIT_SECONDS)
        if not done:
            check.cancel()
            self._late_checks.add(check)  # kept until it ends; one pool connection each
            check.add_done_callback(self._late_checks.discard)
            raise self._error(f"no answer within {READINESS_WAIT_SECONDS} s")
        if check.result():
            raise self._error("the server is a read-only standby")

    async def _primary_or_standby(self) -> bool:
        import psycopg

        try:
            async with self._pool.connection(timeout=READINESS_WAIT_SECONDS) as connection:
                row = await (await connection.execute("SELECT pg_is_in_recovery() AS r")
                             ).fetchone()
        except psycopg.Error as error:
            raise self._error(error) from None
        return bool(row and row["r"])

    async def list(self, *, limit: int, after_id: int = 0, state: State | None = None,
                   conflicted: bool = False,
                   since: dt.datetime | None = None) -> builtins.list[StoredNotification]:
        where, parameters = list_filter(POSTGRES, after_id, state, conflicted, since)
        rows = await self._execute(
            f"SELECT {_COLUMNS} FROM notifications WHERE {where} ORDER BY id LIMIT %s",  # noqa: S608
            (*parameters, limit))
        return [stored_notification(row) for row in rows]

    async def get(self, inbox_id: int) -> StoredNotification | None:
        rows = await self._execute(
            f"SELECT {_COLUMNS} FROM notifications WHERE id = %s", (inbox_id,))  # noqa: S608
        return stored_notification(rows[0]) if rows else None

    async def conflicts(self, inbox_id: int,
                        limit: int | None = None) -> builtins.list[RecordedConflict]:
        statement = _CONFLICTS.of_notification + ("" if limit is None else " LIMIT %(limit)s")
        rows = await self._execute(statement, {"inbox_id": inbox_id, "limit": limit})
        return [recorded_conflict(row) for row in rows]

    async def events(self, inbox_id: int, *, limit: int) -> builtins.list[DeliveryEvent]:
        rows = await self._execute(_EVENTS.latest, {"inbox_id": inbox_id, "limit": limit})
        return [delivery_event(row) for row in reversed(rows)]

    async def claim(self, *, limit: int, lease_seconds: float,
                    now: dt.datetime) -> builtins.list[StoredNotification]:
        rows = await self._execute(CLAIM, {
            "now": now, "limit": limit, "lease": now + dt.timedelta(seconds=lease_seconds)})
        return sorted((stored_notification(row) for row in rows), key=lambda item: item.id)

    async def prepare_delivery(self) -> None:
        async with self._transaction("cannot build the delivery index") as connection:
            # two replicas building it at once would collide on its name
            await take_migration_lock(connection)
            await connection.execute(DELIVERY_INDEX)

    async def _change(self, statement: str, parameters: tuple[Any, ...],
                      event: dict[str, Any]) -> None:
        """One notification's change and, when it is stored, the delivery event it makes."""
        async with self._transaction() as connection:
            if (await connection.execute(statement, parameters)).rowcount:
                await connection.execute(_EVENTS.record, event)

    async def mark_delivered(self, inbox_id: int, now: dt.datetime) -> None:
        await self._change(
            "UPDATE notifications SET state = %s, delivered_at = %s, "
            "attempts = attempts + 1, lease_until = NULL, last_error = NULL WHERE id = %s",
            (DELIVERED, now, inbox_id),
            {"inbox_id": inbox_id, "at": now, "kind": "delivered", "error": None})

    async def mark_failed(self, inbox_id: int, error: str, *, retry_at: dt.datetime | None,
                          now: dt.datetime) -> None:
        await self._change(
            "UPDATE notifications SET state = %s, attempts = attempts + 1, last_error = %s, "
            "lease_until = NULL, next_attempt_at = %s WHERE id = %s",
            (PENDING if retry_at is not None else DEAD, error[:2000], retry_at or now,
             inbox_id),
            {"inbox_id": inbox_id, "at": now, "kind": "failed" if retry_at else "dead",
             "error": error[:2000]})

    async def retry(self, inbox_id: int | None, now: dt.datetime, *,
                    through_id: int | None = None) -> int:
        parameters = {"now": now, "id": inbox_id, "through": through_id}
        events, update = retry_statements(POSTGRES, inbox_id, through_id)
        async with self._transaction() as connection:
            await connection.execute(events, parameters)
            changed: int = (await connection.execute(update, parameters)).rowcount
        return changed

    async def stats(self) -> InboxStats:
        [row] = await self._execute(
            f"SELECT count(*) FILTER (WHERE state = '{PENDING}') AS pending, "  # noqa: S608
            f"count(*) FILTER (WHERE state = '{DEAD}') AS dead, "
            f"min(received_at) FILTER (WHERE state = '{PENDING}') AS oldest FROM notifications")
        return InboxStats(pending=row["pending"], dead=row["dead"],
                          oldest_pending_received_at=row["oldest"])

    async def recent(self, *, limit: int, state: State | None = None, key: str | None = None,
                     before_id: int | None = None,
                     after_id: int | None = None) -> builtins.list[ListedNotification]:
        where, parameters = recent_filter(POSTGRES, state, key, before_id=before_id,
                                          after_id=after_id)
        rows = await self._execute(recent_statement(POSTGRES, where,
                                                    upward=after_id is not None),
                                   (*parameters, limit))
        return [listed_notification(row) for row in rows]

    async def count(self, *, state: State | None = None, key: str | None = None,
                    after_id: int | None = None) -> int:
        where, parameters = recent_filter(POSTGRES, state, key, after_id=after_id)
        [row] = await self._execute(
            f"SELECT count(*) AS n FROM notifications WHERE {where}", parameters)  # noqa: S608
        return int(row["n"])

    async def close(self) -> None:
        await super().close()
        await self._release()
