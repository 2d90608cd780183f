"""PostgreSQL inbox: shared by replicas, with exactly the SQLite inbox's semantics.

psycopg 3 with a connection pool. Deduplication is the same unique constraint, so a
redelivery reaching another replica is recognised too; claims use FOR UPDATE SKIP
LOCKED so replicas delivering at once never take the same notification. The schema is
created and migrated by omgate under an advisory lock (``omgate inbox migrate``, and at
start).
"""

from __future__ import annotations

import builtins
import datetime as dt
import hashlib
import json
from collections.abc import Sequence
from typing import Any

from service.dsn import mask_dsn
from service.inbox.base import (
    DEAD,
    DELIVERED,
    DELIVERY_INDEX,
    PENDING,
    SELECT_COLUMNS,
    DeliveryEvent,
    Inbox,
    InboxError,
    InboxStats,
    IncomingMessage,
    RecordedConflict,
    Rows,
    StoredNotification,
    StoreResult,
    claimable_condition,
    conflict_statements,
    conflicts_migration,
    console_migration,
    delivery_event,
    delivery_migration,
    digests,
    event_statements,
    insert_statement,
    isoformat,
    list_filter,
    notifications_migration,
    recent_filter,
    recent_statement,
    record_index_migration,
    recorded_conflict,
    retry_statements,
    row_values,
    store_plan,
)
from service.inbox.chains import (
    ChainRecord,
    ChainSighting,
    HourCount,
    chain_records,
    chain_statements,
    chains_migration,
    endpoint_values,
    hour_counts,
    hour_values,
    hours_by_endpoint_migration,
    prefix_pattern,
    sighting_values,
)

SCHEMA_VERSION = 6
MIGRATION_LOCK = 0x6F6D67617465  # "omgate": one migrating replica at a time
# /readyz is asked by anyone on the public listeners, and by probes that give up after a
# few seconds: it waits this long for a pooled connection, not the pool's 30 seconds.
READINESS_WAIT_SECONDS = 3
_MIGRATIONS = {
    1: notifications_migration("BIGSERIAL", "TIMESTAMPTZ"),
    2: delivery_migration("TIMESTAMPTZ", first_15="left(record_id, 15)", next_attempt_at=[
        "ALTER TABLE notifications ADD COLUMN next_attempt_at TIMESTAMPTZ",
        "UPDATE notifications SET next_attempt_at = received_at",
        "ALTER TABLE notifications ALTER COLUMN next_attempt_at SET NOT NULL"]),
    3: conflicts_migration("BIGSERIAL", "TIMESTAMPTZ"),
    4: chains_migration("TIMESTAMPTZ"),
    5: record_index_migration(),
    6: [*console_migration("BIGSERIAL", "TIMESTAMPTZ"),
        *hours_by_endpoint_migration("TIMESTAMPTZ")],
}

_INSERT = insert_statement("%({})s")
_CONFLICTS = conflict_statements("%({})s")
_CHAINS = chain_statements("%({})s")
_EVENTS = event_statements("%({})s")

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


_CLAIM = f"""
WITH due AS (
    SELECT n.id FROM notifications AS n
    WHERE {claimable_condition("%({})s")}
    ORDER BY n.id LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE notifications SET lease_until = %(lease)s
FROM due WHERE notifications.id = due.id
RETURNING {", ".join(f"notifications.{column}" for column in _COLUMNS.split(", "))}
"""  # noqa: S608 - constants only


def _stored(row: dict[str, Any]) -> StoredNotification:
    values = dict(row)
    values["fields"] = json.loads(values["fields"])
    values["received_at"] = isoformat(values["received_at"])
    values["delivered_at"] = isoformat(values["delivered_at"])
    return StoredNotification(**values)


class PostgresInbox(Inbox):
    # Signatures spell ``builtins.list``: the method ``list`` shadows it (see Inbox).

    def __init__(self, url: str, *, group_commit: bool = True, pool_size: int = 10) -> None:
        super().__init__(group_commit=group_commit)
        self.url = url
        self._masked = mask_dsn(url)
        self._pool_size = pool_size
        self._pool: Any = None

    def _error(self, error: Exception | str, doing: str = "") -> InboxError:
        """An InboxError naming the database, with the password masked out of everything
        (psycopg's text may quote the connection string)."""
        prefix = f"{self._masked}: {doing}: " if doing else f"{self._masked}: "
        return InboxError(prefix + self._masked.scrub(str(error)))

    async def open(self) -> None:
        import psycopg
        from psycopg.rows import dict_row
        from psycopg_pool import AsyncConnectionPool

        self._pool = AsyncConnectionPool(
            self.url, min_size=1, max_size=self._pool_size, open=False, timeout=30,
            kwargs={"row_factory": dict_row, "autocommit": False})
        try:
            await self._pool.open(wait=True, timeout=30)
        except psycopg.Error as error:  # a PoolTimeout too
            raise self._error(error, "cannot connect") from None
        await self.migrate()

    async def _execute(self, statement: str,
                       parameters: Any = None) -> builtins.list[dict[str, Any]]:
        import psycopg

        try:
            async with self._pool.connection() as connection:
                cursor = await connection.execute(statement, parameters)
                return await cursor.fetchall() if cursor.description else []
        except psycopg.Error as error:
            raise self._error(error) from None

    async def _execute_together(self, *steps: tuple[str, Any]) -> builtins.list[int]:
        """Statements in one transaction; the rows each changed."""
        import psycopg

        changed = []
        try:
            async with self._pool.connection() as connection, connection.transaction():
                for statement, parameters in steps:
                    changed.append((await connection.execute(statement, parameters)).rowcount)
        except psycopg.Error as error:
            raise self._error(error) from None
        return changed

    async def migrate(self) -> int:
        import psycopg

        try:
            async with self._pool.connection() as connection, connection.transaction():
                await connection.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
                await connection.execute(
                    "CREATE TABLE IF NOT EXISTS omgate_schema (version INTEGER NOT NULL)")
                row = await (await connection.execute(
                    "SELECT version FROM omgate_schema")).fetchone()
                version = row["version"] if row else 0
                if version > SCHEMA_VERSION:
                    raise self._error(
                        f"inbox schema version {version} is newer than this omgate "
                        f"understands ({SCHEMA_VERSION}); upgrade omgate")
                for step in range(version + 1, SCHEMA_VERSION + 1):
                    for statement in _MIGRATIONS[step]:
                        await connection.execute(statement)
                if version < 3 <= SCHEMA_VERSION:
                    await self._give_digests(connection)
                await connection.execute("DELETE FROM omgate_schema")
                await connection.execute("INSERT INTO omgate_schema VALUES (%s)",
                                         (max(version, SCHEMA_VERSION),))
        except psycopg.Error as error:
            raise self._error(error, "migration failed") from None
        return SCHEMA_VERSION

    @staticmethod
    async def _give_digests(connection: Any) -> None:
        """Digests for the rows stored before schema version 3."""
        while rows := await (await connection.execute(_CONFLICTS.undigested)).fetchall():
            async with connection.cursor() as cursor:
                await cursor.executemany(_CONFLICTS.set_digest, digests(rows))

    def prepare(self, incoming: IncomingMessage) -> Rows:
        # as the message arrives, not with a connection and a transaction held open
        return row_values(incoming)

    async def store_prepared(self, messages: Sequence[Rows]
                             ) -> builtins.list[StoreResult | Exception]:
        import psycopg

        results: list[StoreResult | Exception] = []
        try:
            async with self._pool.connection() as connection, connection.transaction():
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
        except psycopg.Error as error:
            raise self._error(error) from None
        return results

    @staticmethod
    async def _store_rows(connection: Any, rows: Rows) -> StoreResult:
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
        import psycopg

        try:
            async with self._pool.connection(timeout=READINESS_WAIT_SECONDS) as connection:
                row = await (await connection.execute("SELECT pg_is_in_recovery() AS r")
                             ).fetchone()
        except psycopg.Error as error:
            raise self._error(error) from None
        if row and row["r"]:
            raise self._error("the server is a read-only standby")

    async def list(self, *, limit: int, after_id: int = 0, state: str | None = None,
                   conflicted: bool = False,
                   since: dt.datetime | None = None) -> builtins.list[StoredNotification]:
        where, parameters = list_filter("%s", after_id, state, conflicted, since)
        rows = await self._execute(
            f"SELECT {_COLUMNS} FROM notifications WHERE {where} ORDER BY id LIMIT %s",  # noqa: S608
            (*parameters, limit))
        return [_stored(row) for row in rows]

    async def get(self, inbox_id: int) -> StoredNotification | None:
        rows = await self._execute(
            f"SELECT {_COLUMNS} FROM notifications WHERE id = %s", (inbox_id,))  # noqa: S608
        return _stored(rows[0]) if rows else None

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
        rows = await self._execute(_CLAIM, {
            "now": now, "limit": limit, "lease": now + dt.timedelta(seconds=lease_seconds)})
        return sorted((_stored(row) for row in rows), key=lambda item: item.id)

    async def prepare_delivery(self) -> None:
        import psycopg

        try:
            async with self._pool.connection() as connection, connection.transaction():
                # two replicas building it at once would collide on its name
                await connection.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
                await connection.execute(DELIVERY_INDEX)
        except psycopg.Error as error:
            raise self._error(error, "cannot build the delivery index") from None

    async def _change(self, statement: str, parameters: tuple[Any, ...],
                      event: dict[str, Any]) -> None:
        """One notification's change and, when it is stored, the delivery event it makes."""
        import psycopg

        try:
            async with self._pool.connection() as connection, connection.transaction():
                if (await connection.execute(statement, parameters)).rowcount:
                    await connection.execute(_EVENTS.record, event)
        except psycopg.Error as error:
            raise self._error(error) from None

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
        events, update = retry_statements("%({})s", inbox_id, through_id)
        return (await self._execute_together((events, parameters), (update, parameters)))[1]

    async def stats(self) -> InboxStats:
        [row] = await self._execute(
            f"SELECT count(*) FILTER (WHERE state = '{PENDING}') AS pending, "  # noqa: S608
            f"count(*) FILTER (WHERE state = '{DEAD}') AS dead, "
            f"min(received_at) FILTER (WHERE state = '{PENDING}') AS oldest FROM notifications")
        return InboxStats(pending=row["pending"], dead=row["dead"],
                          oldest_pending_received_at=row["oldest"])

    async def recent(self, *, limit: int, state: str | None = None, key: str | None = None,
                     before_id: int | None = None,
                     after_id: int | None = None) -> builtins.list[StoredNotification]:
        where, parameters = recent_filter("%s", state, key, before_id=before_id,
                                          after_id=after_id)
        rows = await self._execute(recent_statement("%s", where, upward=after_id is not None),
                                   (*parameters, limit))
        return [_stored(row) for row in rows]

    async def count(self, *, state: str | None = None, key: str | None = None,
                    after_id: int | None = None) -> int:
        where, parameters = recent_filter("%s", state, key, after_id=after_id)
        [row] = await self._execute(
            f"SELECT count(*) AS n FROM notifications WHERE {where}", parameters)  # noqa: S608
        return int(row["n"])

    async def record_chains(self, sightings: Sequence[ChainSighting],
                            hours: Sequence[HourCount]) -> builtins.list[str]:
        import psycopg

        missing = []
        try:
            async with self._pool.connection() as connection, connection.transaction():
                for sighting in sightings:
                    statement = _CHAINS.add if sighting.certificates is None else _CHAINS.upsert
                    if not (await connection.execute(statement,
                                                     sighting_values(sighting))).rowcount:
                        missing.append(sighting.chain_sha256)
                        continue
                    for seen in sighting.endpoints:
                        await connection.execute(
                            _CHAINS.endpoint, endpoint_values(sighting.chain_sha256, seen))
                for count in hours:
                    await connection.execute(_CHAINS.hour, hour_values(count))
        except psycopg.Error as error:
            raise self._error(error) from None
        return missing

    async def _read_chains(self, statement: str, endpoints: str,
                           parameters: dict[str, Any]) -> builtins.list[ChainRecord]:
        return chain_records(await self._execute(statement, parameters),
                             await self._execute(endpoints, parameters))

    async def chains(self, *, since: dt.datetime, limit: int) -> builtins.list[ChainRecord]:
        return await self._read_chains(_CHAINS.recent, _CHAINS.endpoints_since,
                                       {"since": since, "limit": limit})

    async def chains_by_prefix(self, prefix: str) -> builtins.list[ChainRecord]:
        return await self._read_chains(_CHAINS.by_prefix, _CHAINS.endpoints_by_prefix,
                                       {"prefix": prefix_pattern(prefix)})

    async def decisions_since(self, since: dt.datetime) -> dict[str, int]:
        rows = await self._execute(_CHAINS.hours_since, {"since": since})
        return {row["outcome"]: int(row["connections"]) for row in rows}

    async def decision_hours(self, since: dt.datetime,
                             limit: int) -> builtins.list[HourCount]:
        return hour_counts(await self._execute(_CHAINS.hours, {"since": since,
                                                                "limit": limit}))

    async def forget_chains(self, before: dt.datetime) -> None:
        import psycopg

        try:
            async with self._pool.connection() as connection, connection.transaction():
                for statement in _CHAINS.forget:
                    await connection.execute(statement, {"before": before})
        except psycopg.Error as error:
            raise self._error(error) from None

    async def close(self) -> None:
        await super().close()
        if self._pool is not None:
            await self._pool.close()
