"""The SQLite inbox's database: WAL journal, full synchronous commits, one thread.

All access goes through a single-thread executor that owns the connection, so the
event loop never blocks on a commit and SQLite never sees two threads. Several
processes may share the file (workers, serve and deliver): write transactions are
IMMEDIATE, and take turns on a lock file first (``<inbox>.writer-lock``): waiting on it,
the next writer starts as soon as one commits, where SQLite's busy handler sleeps between
tries (up to 100 ms at a time). The turn is only a courtesy: SQLite's own locking and busy
timeout still hold, and decide when the turn cannot be had within the busy timeout.

The stores built on it (``sqlite_chains``, ``sqlite``) run their statements through a few
generic calls: :meth:`SqliteDatabase._query`, :meth:`SqliteDatabase._queries` and
:meth:`SqliteDatabase._write`, or :meth:`SqliteDatabase._run` for other work on the thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import fcntl
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar, TypeVarTuple

from service.inbox.dialect import SQLITE
from service.inbox.encoding import digests
from service.inbox.migrations import SCHEMA_VERSION, schema_migrations
from service.inbox.model import InboxError, MissingFolderError
from service.inbox.statements import conflict_statements

T = TypeVar("T")
Args = TypeVarTuple("Args")
Parameters = Sequence[Any] | Mapping[str, Any]

MIGRATIONS = schema_migrations(SQLITE)
_CONFLICTS = conflict_statements(SQLITE)
TURN_POLL_SECONDS = 0.002


# SQLite's primary result codes that say the storage failed, not the statement.
_STORAGE_FAILURES = frozenset({
    sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_NOMEM, sqlite3.SQLITE_READONLY,
    sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_FULL, sqlite3.SQLITE_CANTOPEN,
    sqlite3.SQLITE_PROTOCOL, sqlite3.SQLITE_NOTADB,
})


def timestamp(moment: dt.datetime) -> str:
    """UTC, fixed width: compares as text the way it does as time."""
    return moment.astimezone(dt.UTC).isoformat(timespec="microseconds")  # half strftime's cost


def with_timestamps(values: dict[str, Any]) -> dict[str, Any]:
    """Timestamps as the fixed-width text this inbox stores."""
    return {name: timestamp(value) if isinstance(value, dt.datetime) else value
            for name, value in values.items()}


def _take_turn(descriptor: int, timeout: float) -> bool:
    """Whether the exclusive lock on ``descriptor`` was had within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(TURN_POLL_SECONDS)
        except OSError:  # a file system without flock
            return False


def _owned_as_the_database(descriptor: int, database: Path) -> None:
    """The lock file belongs to whoever owns the database, as SQLite's -wal and -shm files
    do: a tool run as root first must not lock the service's user out of its turn."""
    with contextlib.suppress(OSError):
        owner = os.stat(database) if database.exists() else os.stat(database.parent)
        if os.geteuid() == 0:
            os.fchown(descriptor, owner.st_uid, owner.st_gid)


def database_files(path: Path) -> tuple[Path, Path, Path]:
    """The database and the -wal and -shm files SQLite keeps beside it in WAL mode: all
    three hold what notifications say."""
    return path, Path(f"{path}-wal"), Path(f"{path}-shm")


def _create_private(database: Path) -> None:
    """Create the database file 0600 before SQLite would (with the umask's mode, 0644 by
    default): SQLite gives its -wal and -shm files the database's mode. An existing file
    keeps its mode (``omgate serve`` names one others can read); whatever stops the
    creation here stops SQLite too, which reports it."""
    with contextlib.suppress(OSError):
        os.close(os.open(database, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))


class SqliteDatabase:
    """One SQLite inbox file, its connection and the thread that owns it."""

    def __init__(self, path: Path, *, busy_timeout_ms: int = 10000,
                 create_folder: bool = True) -> None:
        self.path = path
        self._create_folder = create_folder  # else a missing folder is MissingFolderError
        self._busy_timeout_ms = busy_timeout_ms
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="omgate-sqlite")
        self._connection: sqlite3.Connection | None = None
        self._writer_lock: int | None = None  # descriptor of the lock file writers take turns on

    # -- running on the inbox thread ------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if self._connection is None:
            if self._create_folder:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            elif not self.path.parent.is_dir():
                raise MissingFolderError(self.path)
            _create_private(self.path)
            connection = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False,
                timeout=self._busy_timeout_ms / 1000,
            )
            connection.row_factory = sqlite3.Row
            mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise InboxError(f"{self.path}: SQLite refused WAL mode (journal_mode={mode})")
            connection.execute("PRAGMA synchronous=FULL")
            connection.execute(f"PRAGMA busy_timeout={int(self._busy_timeout_ms)}")
            self._connection = connection
            self._migrate(connection)
        return self._connection

    def _transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        connection = self._connect()
        with self._writers_turn():
            connection.execute("BEGIN IMMEDIATE")
            try:
                result = work(connection)
                connection.execute("COMMIT")
            except BaseException:
                # a COMMIT that failed (a full disk) has rolled back already: a ROLLBACK
                # then would replace the cause with "no transaction is active"
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise
        return result

    @contextlib.contextmanager
    def _writers_turn(self) -> Iterator[None]:
        """The turn on the lock file, waited for up to busy_timeout. The turn only spares
        SQLite's busy handler its sleeps: when it cannot be had (a holder that is stopped or
        hung, a lock file another user made, a file system without locks), the transaction
        goes on under SQLite's own locking, which bounds the wait and keeps the data safe."""
        descriptor = self._lock_descriptor()
        if descriptor is None or not _take_turn(descriptor, self._busy_timeout_ms / 1000):
            yield
            return
        try:
            yield
        finally:
            fcntl.flock(descriptor, fcntl.LOCK_UN)

    def _lock_descriptor(self) -> int | None:
        if self._writer_lock is None:
            try:
                self._writer_lock = os.open(f"{self.path}.writer-lock",
                                            os.O_RDWR | os.O_CREAT, 0o600)
            except OSError:
                return None  # tried again at the next transaction
            _owned_as_the_database(self._writer_lock, self.path)
        return self._writer_lock

    def _migrate(self, connection: sqlite3.Connection) -> int:
        def upgrade(connection: sqlite3.Connection) -> int:
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise InboxError(
                    f"{self.path}: inbox schema version {version} is newer than this omgate "
                    f"understands ({SCHEMA_VERSION}); upgrade omgate"
                )
            for step in range(version + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[step]:
                    connection.execute(statement)
                connection.execute(f"PRAGMA user_version={step}")
            if version < 2 <= SCHEMA_VERSION:
                connection.execute("UPDATE notifications SET next_attempt_at = received_at")
            if version < 3 <= SCHEMA_VERSION:
                while rows := connection.execute(_CONFLICTS.undigested).fetchall():
                    undigested = [dict(row) for row in rows]
                    connection.executemany(_CONFLICTS.set_digest, digests(undigested))
            return SCHEMA_VERSION

        return self._transaction(upgrade)

    def _fetch_all(self, *steps: tuple[str, Parameters]) -> list[list[sqlite3.Row]]:
        connection = self._connect()
        return [connection.execute(statement, parameters).fetchall()
                for statement, parameters in steps]

    def _error(self, error: sqlite3.Error) -> InboxError:
        code = getattr(error, "sqlite_errorcode", None)
        return InboxError(f"{self.path}: {error}",
                          storage=code is not None and code & 0xFF in _STORAGE_FAILURES)

    def _close_connection(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        if self._writer_lock is not None:
            os.close(self._writer_lock)
            self._writer_lock = None

    # -- from the event loop ----------------------------------------------------------------

    async def _run(self, function: Callable[[*Args], T], *args: *Args) -> T:
        """``function(*args)`` on the inbox thread; SQLite's errors as InboxError."""
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._executor, function, *args
            )
        except sqlite3.Error as error:
            raise self._error(error) from error

    async def _query(self, statement: str, parameters: Parameters) -> list[sqlite3.Row]:
        """The rows one statement reads (outside a write transaction)."""
        [rows] = await self._run(self._fetch_all, (statement, parameters))
        return rows

    async def _queries(self, *steps: tuple[str, Parameters]) -> list[list[sqlite3.Row]]:
        """The rows of each statement, read one after the other on the thread."""
        return await self._run(self._fetch_all, *steps)

    async def _write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """``work`` in one IMMEDIATE transaction, in the writers' turn."""
        return await self._run(self._transaction, work)

    async def open(self) -> None:
        await self._run(self._connect)

    async def migrate(self) -> int:
        await self._run(self._connect)
        return await self._run(self._migrate, self._connect())

    async def _release(self) -> None:
        """Close the connection and stop the thread."""
        await self._run(self._close_connection)
        self._executor.shutdown(wait=True)
