"""The PostgreSQL inbox's database: a psycopg 3 connection pool, its errors with the
password masked out, and the schema, created and migrated under an advisory lock
(``omgate inbox migrate``, and at start).

The stores built on it (``postgres_chains``, ``postgres``) run their statements through
:meth:`PostgresDatabase._execute` (one statement) and :meth:`PostgresDatabase._transaction`
(several, in one transaction).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from service.dsn import mask_dsn
from service.inbox.dialect import POSTGRES
from service.inbox.encoding import digests
from service.inbox.migrations import SCHEMA_VERSION, schema_migrations
from service.inbox.model import InboxError
from service.inbox.statements import conflict_statements

MIGRATION_LOCK = 0x6F6D67617465  # "omgate": one migrating replica at a time
MIGRATIONS = schema_migrations(POSTGRES)
_CONFLICTS = conflict_statements(POSTGRES)


CONNECT_WAIT_SECONDS = 30  # for the first connection: PostgreSQL may still be starting
CAUSE_CONNECT_SECONDS = 5  # for the one attempt that learns why there was none
MIGRATION_LOCK_WAIT_SECONDS = 60  # for another omgate's migration (seconds, at most)


# SQLSTATE classes that say the server or the connection failed, not the statement:
# connection exceptions, insufficient resources (a full disk), operator intervention (a
# shutdown), system errors (I/O) and internal errors; and a read-only transaction (the
# server is a standby now).
_STORAGE_CLASSES = frozenset({"08", "53", "57", "58", "XX"})
_READ_ONLY_TRANSACTION = "25006"


def storage_failed(error: Exception) -> bool:
    """Whether psycopg's ``error`` is the database failing rather than the statement: its
    SQLSTATE says so, or it has none and is operational (no connection, the pool's wait)."""
    import psycopg

    sqlstate = getattr(error, "sqlstate", None)
    if sqlstate is None:
        return isinstance(error, psycopg.OperationalError)
    return sqlstate[:2] in _STORAGE_CLASSES or sqlstate == _READ_ONLY_TRANSACTION


async def take_migration_lock(connection: Any) -> None:
    """The lock one omgate migrating (or building an index) holds, in ``connection``'s
    transaction; waited for MIGRATION_LOCK_WAIT_SECONDS at most: one stuck holding it must
    not hang another's start, or a tool, for good."""
    await connection.execute(f"SET LOCAL lock_timeout = '{MIGRATION_LOCK_WAIT_SECONDS * 1000}ms'")
    await connection.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))


class PostgresDatabase:
    """One PostgreSQL database an inbox is kept in, through a pool of connections."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = url
        self._masked = mask_dsn(url)
        self._pool_size = pool_size
        self._pool: Any = None

    def _error(self, error: Exception | str, doing: str = "") -> InboxError:
        """An InboxError naming the database, with the password masked out of everything
        (psycopg's text may quote the connection string)."""
        prefix = f"{self._masked}: {doing}: " if doing else f"{self._masked}: "
        return InboxError(prefix + self._masked.scrub(str(error)),
                          storage=isinstance(error, Exception) and storage_failed(error))

    async def open(self) -> None:
        import psycopg
        from psycopg.rows import dict_row
        from psycopg_pool import AsyncConnectionPool

        self._pool = AsyncConnectionPool(
            self.url, min_size=1, max_size=self._pool_size, open=False, timeout=30,
            kwargs={"row_factory": dict_row, "autocommit": False})
        try:
            await self._pool.open(wait=True, timeout=CONNECT_WAIT_SECONDS)
        except psycopg.Error as error:  # a PoolTimeout too
            raise self._error(await self._why_not(error), "cannot connect") from None
        await self.migrate()

    async def _why_not(self, pool_error: Exception) -> str:
        """Why the pool found no connection: its own error says only that it waited, so
        one connection is tried to learn what the server (or the network) answers."""
        import psycopg
        from psycopg_pool import PoolTimeout

        if not isinstance(pool_error, PoolTimeout):
            return str(pool_error)
        try:
            connection = await psycopg.AsyncConnection.connect(
                self.url, connect_timeout=CAUSE_CONNECT_SECONDS)
        except psycopg.Error as error:
            return f"{error} (tried for {CONNECT_WAIT_SECONDS} s)"
        await connection.close()  # it answers now: it came up as the pool gave up
        return f"{pool_error} (it answers now: try again)"

    async def _execute(self, statement: str, parameters: Any = None) -> list[dict[str, Any]]:
        """The rows one statement returns (none: an empty list), on a pooled connection."""
        import psycopg

        try:
            async with self._pool.connection() as connection:
                cursor = await connection.execute(statement, parameters)
                return await cursor.fetchall() if cursor.description else []
        except psycopg.Error as error:
            raise self._error(error) from None

    @contextlib.asynccontextmanager
    async def _transaction(self, doing: str = "") -> AsyncIterator[Any]:
        """A pooled connection in one transaction; psycopg's errors leave it as InboxError
        (``doing``: what failed, in their message)."""
        import psycopg

        try:
            async with self._pool.connection() as connection, connection.transaction():
                yield connection
        except psycopg.Error as error:
            raise self._error(error, doing) from None

    async def migrate(self) -> int:
        async with self._transaction("migration failed") as connection:
            await take_migration_lock(connection)
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
                for statement in MIGRATIONS[step]:
                    await connection.execute(statement)
            if version < 3 <= SCHEMA_VERSION:
                await self._give_digests(connection)
            await connection.execute("DELETE FROM omgate_schema")
            await connection.execute("INSERT INTO omgate_schema VALUES (%s)",
                                     (max(version, SCHEMA_VERSION),))
        return SCHEMA_VERSION

    @staticmethod
    async def _give_digests(connection: Any) -> None:
        """Digests for the rows stored before schema version 3."""
        while rows := await (await connection.execute(_CONFLICTS.undigested)).fetchall():
            async with connection.cursor() as cursor:
                await cursor.executemany(_CONFLICTS.set_digest, digests(rows))

    async def _release(self) -> None:
        """Close the pool."""
        if self._pool is not None:
            await self._pool.close()
