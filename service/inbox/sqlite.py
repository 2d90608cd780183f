"""SQLite inbox: WAL journal, full synchronous commits, one writer thread.

All access goes through a single-thread executor that owns the connection, so the
event loop never blocks on a commit and SQLite never sees two threads. Several
processes may share the file (workers, serve and deliver): write transactions are
IMMEDIATE, and take turns on a lock file first (``<inbox>.writer-lock``): waiting on it,
the next writer starts as soon as one commits, where SQLite's busy handler sleeps between
tries (up to 100 ms at a time). The turn is only a courtesy: SQLite's own locking and busy
timeout still hold, and decide when the turn cannot be had within the busy timeout.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import datetime as dt
import fcntl
import json
import operator
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar, TypeVarTuple

from service.inbox.base import (
    DEAD,
    DELIVERED,
    DELIVERY_INDEX,
    INSERT_COLUMNS,
    PENDING,
    SELECT_COLUMNS,
    DeliveryEvent,
    Inbox,
    InboxError,
    InboxStats,
    IncomingMessage,
    MissingFolderError,
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

T = TypeVar("T")
Args = TypeVarTuple("Args")

SCHEMA_VERSION = 6
_MIGRATIONS = {
    1: [
        *notifications_migration("INTEGER", "TEXT"),
        "CREATE TABLE heartbeat (id INTEGER PRIMARY KEY CHECK (id = 1), at TEXT)",
        "INSERT INTO heartbeat (id, at) VALUES (1, NULL)",
    ],
    2: delivery_migration("TEXT", first_15="substr(record_id, 1, 15)", next_attempt_at=[
        "ALTER TABLE notifications ADD COLUMN next_attempt_at TEXT NOT NULL DEFAULT ''"]),
    3: conflicts_migration("INTEGER", "TEXT"),
    4: chains_migration("TEXT"),
    5: record_index_migration(),
    6: [*console_migration("INTEGER", "TEXT"), *hours_by_endpoint_migration("TEXT")],
}

_INSERT = insert_statement(":{}")
# The same INSERT with parameters by position (SQLite binds those faster than by name); the
# last is next_attempt_at, which starts at received_at.
_INSERT_IN_ORDER = insert_statement("?")
_IN_ORDER = operator.itemgetter(*INSERT_COLUMNS, "received_at")
_CONFLICTS = conflict_statements(":{}")
_CHAINS = chain_statements(":{}")
_EVENTS = event_statements(":{}")

_COLUMNS = ", ".join(SELECT_COLUMNS)

# Due, not leased, and no earlier pending notification for the same record.
_CLAIMABLE = (f"SELECT {_COLUMNS} FROM notifications AS n "  # noqa: S608 - constants only
              f"WHERE {claimable_condition(':{}')} ORDER BY n.id LIMIT :limit")


def _timestamp(moment: dt.datetime) -> str:
    """UTC, fixed width: compares as text the way it does as time."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


def _parameters(values: dict[str, Any]) -> dict[str, Any]:
    """Timestamps as the fixed-width text this inbox stores."""
    return {name: _timestamp(value) if isinstance(value, dt.datetime) else value
            for name, value in values.items()}


def _rows(incoming: IncomingMessage) -> Rows:
    rows = row_values(incoming)
    received_at = _timestamp(incoming.received_at)
    for row in rows:
        row["received_at"] = received_at
    return rows


def _stored(row: sqlite3.Row) -> StoredNotification:
    values = dict(row)
    values["fields"] = json.loads(values["fields"])
    return StoredNotification(**values)


TURN_POLL_SECONDS = 0.002


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


class SqliteInbox(Inbox):
    # Signatures spell ``builtins.list``: the method ``list`` shadows it (see Inbox).

    def __init__(self, path: Path, *, group_commit: bool = True,
                 busy_timeout_ms: int = 10000, create_folder: bool = True) -> None:
        super().__init__(group_commit=group_commit)
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
                for statement in _MIGRATIONS[step]:
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

    def _store_batch(self, messages: Sequence[Rows]) -> builtins.list[StoreResult | Exception]:
        def store_all(connection: sqlite3.Connection) -> list[StoreResult | Exception]:
            results: list[StoreResult | Exception] = []
            for rows in messages:
                connection.execute("SAVEPOINT message")
                try:
                    results.append(self._store_rows(connection, rows))
                except sqlite3.Error as error:
                    connection.execute("ROLLBACK TO message")
                    results.append(self._error(error))
                connection.execute("RELEASE message")
            return results

        return self._transaction(store_all)

    def _error(self, error: sqlite3.Error) -> InboxError:
        return InboxError(f"{self.path}: {error}")

    @staticmethod
    def _store_rows(connection: sqlite3.Connection, rows: Rows) -> StoreResult:
        """All rows in one statement when all are new (nearly always); otherwise again one
        at a time, to tell the duplicates and conflicts apart."""
        if connection.executemany(_INSERT_IN_ORDER, map(_IN_ORDER, rows)).rowcount == len(rows):
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

    def _list(self, limit: int, after_id: int, state: str | None, conflicted: bool,
              since: dt.datetime | None) -> builtins.list[StoredNotification]:
        where, parameters = list_filter("?", after_id, state, conflicted,
                                        None if since is None else _timestamp(since))
        rows = self._connect().execute(
            f"SELECT {_COLUMNS} FROM notifications WHERE {where} ORDER BY id LIMIT ?",  # noqa: S608
            (*parameters, limit))
        return [_stored(row) for row in rows]

    def _get(self, inbox_id: int) -> StoredNotification | None:
        row = self._connect().execute(
            f"SELECT {_COLUMNS} FROM notifications WHERE id = ?", (inbox_id,)  # noqa: S608
        ).fetchone()
        return None if row is None else _stored(row)

    def _conflicts(self, inbox_id: int,
                   limit: int | None) -> builtins.list[RecordedConflict]:
        statement = _CONFLICTS.of_notification + ("" if limit is None else " LIMIT :limit")
        rows = self._connect().execute(statement, {"inbox_id": inbox_id, "limit": limit})
        return [recorded_conflict(dict(row)) for row in rows]

    def _events(self, inbox_id: int, limit: int) -> builtins.list[DeliveryEvent]:
        rows = self._connect().execute(_EVENTS.latest, {"inbox_id": inbox_id, "limit": limit})
        return [delivery_event(row) for row in reversed(rows.fetchall())]

    def _claim(self, limit: int, lease_seconds: float,
               now: dt.datetime) -> builtins.list[StoredNotification]:
        def claim(connection: sqlite3.Connection) -> list[StoredNotification]:
            rows = connection.execute(_CLAIMABLE, {"now": _timestamp(now), "limit": limit})
            claimed = [_stored(row) for row in rows]
            lease = _timestamp(now + dt.timedelta(seconds=lease_seconds))
            connection.executemany("UPDATE notifications SET lease_until = ? WHERE id = ?",
                                   [(lease, item.id) for item in claimed])
            return claimed

        return self._transaction(claim)

    def _update(self, statement: str, parameters: dict[str, Any],
                event: dict[str, Any] | None = None) -> int:
        """One change, and (``event``: its parameters) the delivery event it makes."""
        def change(connection: sqlite3.Connection) -> int:
            changed = connection.execute(statement, parameters).rowcount
            if event is not None and changed:
                connection.execute(_EVENTS.record, _parameters(event))
            return changed

        return self._transaction(change)

    def _retry(self, statements: tuple[str, str], parameters: dict[str, Any]) -> int:
        def retry(connection: sqlite3.Connection) -> int:
            connection.execute(statements[0], parameters)
            return connection.execute(statements[1], parameters).rowcount

        return self._transaction(retry)

    def _stats(self) -> InboxStats:
        row = self._connect().execute(
            f"SELECT SUM(state = '{PENDING}'), SUM(state = '{DEAD}'), "  # noqa: S608
            f"MIN(CASE WHEN state = '{PENDING}' THEN received_at END) FROM notifications"
        ).fetchone()
        oldest = dt.datetime.fromisoformat(row[2]) if row[2] else None
        return InboxStats(pending=row[0] or 0, dead=row[1] or 0,
                          oldest_pending_received_at=oldest)

    def _recent(self, limit: int, state: str | None, key: str | None, before_id: int | None,
                after_id: int | None) -> builtins.list[StoredNotification]:
        where, parameters = recent_filter("?", state, key, before_id=before_id,
                                          after_id=after_id)
        rows = self._connect().execute(
            recent_statement("?", where, upward=after_id is not None), (*parameters, limit))
        return [_stored(row) for row in rows]

    def _count(self, state: str | None, key: str | None, after_id: int | None) -> int:
        where, parameters = recent_filter("?", state, key, after_id=after_id)
        return int(self._connect().execute(
            f"SELECT count(*) FROM notifications WHERE {where}", parameters  # noqa: S608
        ).fetchone()[0])

    def _record_chains(self, sightings: Sequence[ChainSighting],
                       hours: Sequence[HourCount]) -> builtins.list[str]:
        def write(connection: sqlite3.Connection) -> builtins.list[str]:
            missing = []
            for sighting in sightings:
                statement = _CHAINS.add if sighting.certificates is None else _CHAINS.upsert
                if not connection.execute(statement,
                                          _parameters(sighting_values(sighting))).rowcount:
                    missing.append(sighting.chain_sha256)
                    continue
                connection.executemany(_CHAINS.endpoint, [
                    _parameters(endpoint_values(sighting.chain_sha256, seen))
                    for seen in sighting.endpoints])
            connection.executemany(_CHAINS.hour,
                                   [_parameters(hour_values(count)) for count in hours])
            return missing

        return self._transaction(write)

    def _read_chains(self, statement: str, endpoints: str,
                     parameters: dict[str, Any]) -> builtins.list[ChainRecord]:
        connection = self._connect()
        rows = [dict(row) for row in connection.execute(statement, _parameters(parameters))]
        endpoint_rows = [dict(row) for row in connection.execute(endpoints,
                                                                 _parameters(parameters))]
        return chain_records(rows, endpoint_rows)

    def _decisions_since(self, since: dt.datetime) -> dict[str, int]:
        rows = self._connect().execute(_CHAINS.hours_since, {"since": _timestamp(since)})
        return {row["outcome"]: int(row["connections"]) for row in rows}

    def _decision_hours(self, since: dt.datetime, limit: int) -> builtins.list[HourCount]:
        rows = self._connect().execute(_CHAINS.hours, {"since": _timestamp(since),
                                                        "limit": limit})
        return hour_counts([dict(row) for row in rows])

    def _forget_chains(self, before: dt.datetime) -> None:
        def forget(connection: sqlite3.Connection) -> None:
            for statement in _CHAINS.forget:
                connection.execute(statement, {"before": _timestamp(before)})

        self._transaction(forget)

    def _close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        if self._writer_lock is not None:
            os.close(self._writer_lock)
            self._writer_lock = None

    # -- the async interface ----------------------------------------------------------------

    async def _run(self, function: Callable[[*Args], T], *args: *Args) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._executor, function, *args
            )
        except sqlite3.Error as error:
            raise self._error(error) from error

    async def open(self) -> None:
        await self._run(self._connect)

    async def migrate(self) -> int:
        await self._run(self._connect)
        return await self._run(self._migrate, self._connect())

    def prepare(self, incoming: IncomingMessage) -> Rows:
        # on the event loop: in the inbox thread this Python work would hold the GIL the
        # loop waits for, and delay the commit
        return _rows(incoming)

    async def store_prepared(self, batch: Sequence[Rows]
                             ) -> builtins.list[StoreResult | Exception]:
        return await self._run(self._store_batch, batch)

    async def check_writable(self) -> None:
        await self._run(self._check_writable)

    async def list(self, *, limit: int, after_id: int = 0, state: str | None = None,
                   conflicted: bool = False,
                   since: dt.datetime | None = None) -> builtins.list[StoredNotification]:
        return await self._run(self._list, limit, after_id, state, conflicted, since)

    async def get(self, inbox_id: int) -> StoredNotification | None:
        return await self._run(self._get, inbox_id)

    async def conflicts(self, inbox_id: int,
                        limit: int | None = None) -> builtins.list[RecordedConflict]:
        return await self._run(self._conflicts, inbox_id, limit)

    async def events(self, inbox_id: int, *, limit: int) -> builtins.list[DeliveryEvent]:
        return await self._run(self._events, inbox_id, limit)

    async def claim(self, *, limit: int, lease_seconds: float,
                    now: dt.datetime) -> builtins.list[StoredNotification]:
        return await self._run(self._claim, limit, lease_seconds, now)

    async def prepare_delivery(self) -> None:
        await self._run(self._transaction, lambda connection: connection.execute(DELIVERY_INDEX))

    async def mark_delivered(self, inbox_id: int, now: dt.datetime) -> None:
        await self._run(self._update, (
            "UPDATE notifications SET state = :state, delivered_at = :now, "
            "attempts = attempts + 1, lease_until = NULL, last_error = NULL WHERE id = :id"),
            {"state": DELIVERED, "now": _timestamp(now), "id": inbox_id},
            {"inbox_id": inbox_id, "at": now, "kind": "delivered", "error": None})

    async def mark_failed(self, inbox_id: int, error: str, *, retry_at: dt.datetime | None,
                          now: dt.datetime) -> None:
        state = PENDING if retry_at is not None else DEAD
        await self._run(self._update, (
            "UPDATE notifications SET state = :state, attempts = attempts + 1, "
            "last_error = :error, lease_until = NULL, next_attempt_at = :retry WHERE id = :id"),
            {"state": state, "error": error[:2000], "id": inbox_id,
             "retry": _timestamp(retry_at or now)},
            {"inbox_id": inbox_id, "at": now, "kind": "failed" if retry_at else "dead",
             "error": error[:2000]})

    async def retry(self, inbox_id: int | None, now: dt.datetime, *,
                    through_id: int | None = None) -> int:
        return await self._run(self._retry, retry_statements(":{}", inbox_id, through_id),
                               {"now": _timestamp(now), "id": inbox_id, "through": through_id})

    async def stats(self) -> InboxStats:
        return await self._run(self._stats)

    async def recent(self, *, limit: int, state: str | None = None, key: str | None = None,
                     before_id: int | None = None,
                     after_id: int | None = None) -> builtins.list[StoredNotification]:
        return await self._run(self._recent, limit, state, key, before_id, after_id)

    async def count(self, *, state: str | None = None, key: str | None = None,
                    after_id: int | None = None) -> int:
        return await self._run(self._count, state, key, after_id)

    async def record_chains(self, sightings: Sequence[ChainSighting],
                            hours: Sequence[HourCount]) -> builtins.list[str]:
        return await self._run(self._record_chains, sightings, hours)

    async def chains(self, *, since: dt.datetime, limit: int) -> builtins.list[ChainRecord]:
        return await self._run(self._read_chains, _CHAINS.recent, _CHAINS.endpoints_since,
                               {"since": since, "limit": limit})

    async def chains_by_prefix(self, prefix: str) -> builtins.list[ChainRecord]:
        return await self._run(self._read_chains, _CHAINS.by_prefix,
                               _CHAINS.endpoints_by_prefix, {"prefix": prefix_pattern(prefix)})

    async def decisions_since(self, since: dt.datetime) -> dict[str, int]:
        return await self._run(self._decisions_since, since)

    async def decision_hours(self, since: dt.datetime,
                             limit: int) -> builtins.list[HourCount]:
        return await self._run(self._decision_hours, since, limit)

    async def forget_chains(self, before: dt.datetime) -> None:
        await self._run(self._forget_chains, before)

    async def close(self) -> None:
        await super().close()
        await self._run(self._close)
        self._executor.shutdown(wait=True)
