"""Durable storage of notifications and their delivery state, behind one interface: which
backend a configuration URL names, and the names the rest of omgate imports."""

from __future__ import annotations

from pathlib import Path

from service.dsn import mask_dsn
from service.inbox.model import (
    DEAD,
    DELIVERED,
    PENDING,
    STATES,
    DuplicateConflict,
    InboxError,
    InboxStats,
    IncomingMessage,
    ListedNotification,
    MissingFolderError,
    RecordedConflict,
    State,
    StoredNotification,
    StoreResult,
    inbox_id_of,
)
from service.inbox.sqlite import SqliteInbox
from service.inbox.stores import ChainStore, Inbox, NotificationStore

POSTGRES_SCHEMES = ("postgresql://", "postgres://")
SQLITE_SCHEME = "sqlite:///"


def sqlite_path(url: str) -> Path | None:
    """The database file a ``sqlite:///`` URL names; None for another backend."""
    return Path(url[len(SQLITE_SCHEME):]) if url.startswith(SQLITE_SCHEME) else None


async def open_inbox(url: str, *, group_commit: bool = True, pool_size: int = 10,
                     create_folder: bool = True) -> Inbox:
    """Open (and create or migrate) the inbox a configuration URL names. A SQLite inbox's
    folder is created when missing, unless not ``create_folder`` (MissingFolderError)."""
    inbox: Inbox
    database = sqlite_path(url)
    if database is not None:
        inbox = SqliteInbox(database, group_commit=group_commit, create_folder=create_folder)
        await inbox.open()
        return inbox
    if url.startswith(POSTGRES_SCHEMES):
        from service.inbox.postgres import PostgresInbox

        inbox = PostgresInbox(url, group_commit=group_commit, pool_size=pool_size)
        await inbox.open()
        return inbox
    raise InboxError(f"unsupported inbox URL {mask_dsn(url).shown!r}; expected sqlite:///PATH or "
                     "postgresql://USER@HOST/DATABASE")


__all__ = [
    "DEAD",
    "DELIVERED",
    "PENDING",
    "POSTGRES_SCHEMES",
    "SQLITE_SCHEME",
    "STATES",
    "ChainStore",
    "DuplicateConflict",
    "Inbox",
    "InboxError",
    "InboxStats",
    "IncomingMessage",
    "ListedNotification",
    "MissingFolderError",
    "NotificationStore",
    "RecordedConflict",
    "State",
    "StoreResult",
    "StoredNotification",
    "inbox_id_of",
    "open_inbox",
    "sqlite_path",
]
