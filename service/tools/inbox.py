"""``omgate inbox``: read stored notifications as JSON.

The values were written by whoever sent the messages: the JSON is printed with every
control and bidirectional formatting character escaped (``service/terminal.py``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TextIO

from service.config import Config
from service.inbox import Inbox, State, sqlite_path
from service.terminal import json_text

PAGE = 500


def _dump(document: object) -> str:
    return json_text(document, indent=2)


async def open_configured(config: Config, *, create: bool = False) -> Inbox:
    """The configured inbox, for the tools: a SQLite inbox that does not exist (its folder,
    or its file unless ``create``, as ``omgate inbox migrate`` may) is an error naming
    inbox.url, not a new empty inbox at a mistyped path that reports nothing."""
    from service.server import open_inbox_of

    database = sqlite_path(config.inbox.url)
    if not create and database is not None and database.parent.is_dir() \
            and not database.exists():  # (a missing folder: open_inbox_of names it)
        raise config.error("inbox", "url", f"there is no inbox at {database} (omgate serve, "
                                           "or omgate inbox migrate, creates it there); "
                                           "check the URL")
    return await open_inbox_of(config, group_commit=False)


@dataclass(frozen=True)
class ListFilter:
    """Which notifications ``omgate inbox list`` shows."""

    limit: int
    after_id: int = 0
    state: State | None = None
    conflicted: bool = False
    since: dt.datetime | None = None


async def list_notifications(config: Config, out: TextIO, err: TextIO,
                             which: ListFilter) -> int:
    """A JSON array on ``out``; when more notifications match than ``which.limit``, a note
    on ``err`` says so and how to see the next ones (the array stays valid JSON)."""
    inbox = await open_configured(config)
    try:
        stored = await inbox.list(limit=which.limit + 1, after_id=which.after_id,
                                  state=which.state, conflicted=which.conflicted,
                                  since=which.since)
    finally:
        await inbox.close()
    shown = stored[:which.limit]
    out.write(_dump([notification.to_json() for notification in shown]) + "\n")
    if len(stored) > which.limit:
        err.write(f"omgate inbox list: stopped at --limit {which.limit}; more notifications "
                  f"match: --after {shown[-1].id if shown else which.after_id} lists the "
                  "next ones\n")
    return 0


async def show_notification(config: Config, out: TextIO, err: TextIO, inbox_id: int) -> int:
    inbox = await open_configured(config)
    try:
        stored = await inbox.get(inbox_id)
        conflicts = await inbox.conflicts(inbox_id) if stored and stored.conflicts else []
    finally:
        await inbox.close()
    if stored is None:
        err.write(f"omgate inbox show: no notification with inbox id {inbox_id}\n")
        return 1
    document = stored.to_json()
    if conflicts:
        document["conflicting_redeliveries"] = [conflict.to_json() for conflict in conflicts]
    out.write(_dump(document) + "\n")
    return 0


async def export_notifications(config: Config, out: TextIO) -> int:
    """Every stored notification as JSON Lines, in arrival order, read page by page."""
    inbox = await open_configured(config)
    try:
        after_id = 0
        while page := await inbox.list(limit=PAGE, after_id=after_id):
            for notification in page:
                out.write(json_text(notification.to_json()) + "\n")
            after_id = page[-1].id
    finally:
        await inbox.close()
    return 0


async def retry_notifications(config: Config, out: TextIO, err: TextIO,
                              inbox_id: int | None) -> int:
    """Make one notification, or (``inbox_id`` None) every dead one, pending again."""
    inbox = await open_configured(config)
    try:
        count = await inbox.retry(inbox_id, dt.datetime.now(dt.UTC))
        held = inbox_id is not None and count == 0 and await inbox.get(inbox_id) is not None
    finally:
        await inbox.close()
    if held:
        err.write(f"omgate inbox retry: notification {inbox_id} is being delivered (a worker "
                  "holds its lease); it is left to that attempt\n")
        return 1
    if inbox_id is not None and count == 0:
        err.write(f"omgate inbox retry: no notification with inbox id {inbox_id}\n")
        return 1
    out.write(f"{count} notification{'s' * (count != 1)} pending delivery again\n")
    return 0


async def migrate(config: Config, out: TextIO) -> int:
    inbox = await open_configured(config, create=True)  # creates or upgrades the schema
    try:
        version = await inbox.migrate()
    finally:
        await inbox.close()
    out.write(f"inbox schema at version {version}\n")
    return 0
