"""Durable storage of notifications behind one interface."""

from __future__ import annotations

from pathlib import Path

from service.inbox.base import (
    Inbox,
    InboxError,
    IncomingMessage,
    StoredNotification,
    StoreResult,
)
from service.inbox.sqlite import SqliteInbox


async def open_inbox(url: str) -> Inbox:
    """Open (and create or migrate) the inbox a configuration URL names."""
    if url.startswith("sqlite:///"):
        inbox = SqliteInbox(Path(url[len("sqlite:///") :]))
        await inbox.open()
        return inbox
    raise InboxError(f"unsupported inbox URL {url!r}; expected sqlite:///PATH")


__all__ = [
    "Inbox",
    "InboxError",
    "IncomingMessage",
    "StoreResult",
    "StoredNotification",
    "open_inbox",
]
