"""SQLite inbox: WAL journal, full synchronous commits, one writer thread.

All access goes through a single-thread executor that owns the connection, so
the event loop never blocks on a commit and SQLite never sees two threads.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from service.inbox.base import (
    Inbox,
    InboxError,
    IncomingMessage,
    StoredNotification,
    StoreResult,
    encode_fields,
)
from service.soap import id_key

T = TypeVar("T")

SCHEMA_VERSION = 1
_MIGRATIONS = {
    1: """
    CREATE TABLE notifications (
        id               INTEGER PRIMARY KEY,
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
        received_at      TEXT NOT NULL,
        UNIQUE (org_key, notification_key)
    );
    CREATE TABLE heartbeat (id INTEGER PRIMARY KEY CHECK (id = 1), at TEXT);
    INSERT INTO heartbeat (id, at) VALUES (1, NULL);
    """,
}

_INSERT = """
INSERT INTO notifications (
    org_key, notification_key, organization_id, action_id, notification_id, sobject_type,
    record_id, fields, endpoint, enterprise_url, partner_url, session_id, received_at
) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (org_key, notification_key) DO NOTHING
"""

_COLUMNS = (
    "id, endpoint, organization_id, action_id, notification_id, sobject_type, record_id, "
    "fields, received_at, enterprise_url, partner_url, session_id"
)


def _row_values(incoming: IncomingMessage) -> list[tuple[Any, ...]]:
    message = incoming.message
    session_id = (
        message.session_id.value if incoming.keep_session_id and message.session_id else None
    )
    received_at = incoming.received_at.isoformat()
    return [
        (
            id_key(message.organization_id),
            id_key(notification.id),
            message.organization_id,
            message.action_id,
            notification.id,
            notification.sobject_type,
            notification.record_id,
            encode_fields(notification.fields),
            incoming.endpoint,
            message.enterprise_url,
            message.partner_url,
            session_id,
            received_at,
        )
        for notification in message.notifications
    ]


def _stored(row: sqlite3.Row) -> StoredNotification:
    values = dict(row)
    values["fields"] = json.loads(values["fields"])
    return StoredNotification(**values)


class SqliteInbox(Inbox):
    def __init__(self, path: Path, *, busy_timeout_ms: int = 5000) -> None:
        self.path = path
        self._busy_timeout_ms = busy_timeout_ms
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="omgate-sqlite")
        self._connection: sqlite3.Connection | None = None

    # -- running on the inbox thread ------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if self._connection is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
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
            self._migrate(connection)
            self._connection = connection
        return self._connection

    def _migrate(self, connection: sqlite3.Connection) -> None:
        connection.execute("BEGIN IMMEDIATE")
        try:
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise InboxError(
                    f"{self.path}: inbox schema version {version} is newer than this omgate "
                    f"understands ({SCHEMA_VERSION}); upgrade omgate"
                )
            for step in range(version + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[step].split(";"):
                    if statement.strip():
                        connection.execute(statement)
                connection.execute(f"PRAGMA user_version={step}")
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise

    def _store(self, incoming: IncomingMessage) -> StoreResult:
        connection = self._connect()
        rows = _row_values(incoming)
        connection.execute("BEGIN IMMEDIATE")
        try:
            new = sum(connection.execute(_INSERT, row).rowcount for row in rows)
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        return StoreResult(new=new, duplicates=len(rows) - new)

    def _check_writable(self) -> None:
        connection = self._connect()
        connection.execute("BEGIN IMMEDIATE")
        try:
            connection.execute("UPDATE heartbeat SET at = datetime('now') WHERE id = 1")
        finally:
            connection.execute("ROLLBACK")

    def _list(self, limit: int, after_id: int) -> list[StoredNotification]:
        rows = self._connect().execute(
            f"SELECT {_COLUMNS} FROM notifications WHERE id > ? ORDER BY id LIMIT ?",  # noqa: S608
            (after_id, limit),
        )
        return [_stored(row) for row in rows]

    def _get(self, inbox_id: int) -> StoredNotification | None:
        row = self._connect().execute(
            f"SELECT {_COLUMNS} FROM notifications WHERE id = ?", (inbox_id,)  # noqa: S608
        ).fetchone()
        return None if row is None else _stored(row)

    def _close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    # -- the async interface ----------------------------------------------------------------

    async def _run(self, function: Any, *args: Any) -> Any:
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._executor, function, *args
            )
        except sqlite3.Error as error:
            raise InboxError(f"{self.path}: {error}") from error

    async def open(self) -> None:
        await self._run(self._connect)

    async def store(self, incoming: IncomingMessage) -> StoreResult:
        result: StoreResult = await self._run(self._store, incoming)
        return result

    async def check_writable(self) -> None:
        await self._run(self._check_writable)

    async def list(self, *, limit: int, after_id: int = 0) -> list[StoredNotification]:
        result: list[StoredNotification] = await self._run(self._list, limit, after_id)
        return result

    async def get(self, inbox_id: int) -> StoredNotification | None:
        result: StoredNotification | None = await self._run(self._get, inbox_id)
        return result

    async def close(self) -> None:
        await self._run(self._close)
        self._executor.shutdown(wait=True)
