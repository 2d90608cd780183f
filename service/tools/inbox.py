"""``omgate inbox``: read stored notifications as JSON."""

from __future__ import annotations

import json
from typing import TextIO

from service.config import Config
from service.inbox import Inbox, open_inbox

PAGE = 500


def _dump(document: object) -> str:
    return json.dumps(document, ensure_ascii=False, indent=2)


async def _open(config: Config) -> Inbox:
    return await open_inbox(config.inbox.url)


async def list_notifications(config: Config, out: TextIO, *, limit: int, after_id: int) -> int:
    inbox = await _open(config)
    try:
        stored = await inbox.list(limit=limit, after_id=after_id)
    finally:
        await inbox.close()
    out.write(_dump([notification.to_json() for notification in stored]) + "\n")
    return 0


async def show_notification(config: Config, out: TextIO, err: TextIO, inbox_id: int) -> int:
    inbox = await _open(config)
    try:
        stored = await inbox.get(inbox_id)
    finally:
        await inbox.close()
    if stored is None:
        err.write(f"omgate inbox show: no notification with inbox id {inbox_id}\n")
        return 1
    out.write(_dump(stored.to_json()) + "\n")
    return 0


async def export_notifications(config: Config, out: TextIO) -> int:
    """Every stored notification as JSON Lines, in arrival order, read page by page."""
    inbox = await _open(config)
    try:
        after_id = 0
        while page := await inbox.list(limit=PAGE, after_id=after_id):
            for notification in page:
                out.write(json.dumps(notification.to_json(), ensure_ascii=False) + "\n")
            after_id = page[-1].id
    finally:
        await inbox.close()
    return 0
