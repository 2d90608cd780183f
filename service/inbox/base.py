"""The inbox interface: durable storage of notifications, deduplicated per organization.

A backend stores one message in one transaction and returns only after the
commit is durable; the caller acknowledges only then. Duplicates are decided
by a unique constraint on the 15-character forms of (organization ID,
notification ID), so 15- and 18-character spellings of one ID are one key.
"""

from __future__ import annotations

import datetime as dt
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from service.soap import FieldValue, OutboundMessage


class InboxError(Exception):
    """The inbox could not do what was asked; the message says why."""


@dataclass(frozen=True)
class IncomingMessage:
    """A parsed message plus what the receiver knows about its arrival."""

    message: OutboundMessage
    endpoint: str
    received_at: dt.datetime
    keep_session_id: bool = False


@dataclass(frozen=True)
class StoreResult:
    new: int
    duplicates: int


@dataclass(frozen=True)
class StoredNotification:
    id: int
    endpoint: str
    organization_id: str
    action_id: str
    notification_id: str
    sobject_type: str | None
    record_id: str | None
    fields: dict[str, Any]
    received_at: str
    enterprise_url: str | None
    partner_url: str | None
    session_id: str | None

    def to_json(self) -> dict[str, Any]:
        document = {
            "id": self.id,
            "organization_id": self.organization_id,
            "action_id": self.action_id,
            "notification_id": self.notification_id,
            "sobject_type": self.sobject_type,
            "record_id": self.record_id,
            "fields": self.fields,
            "received_at": self.received_at,
            "endpoint": self.endpoint,
            "enterprise_url": self.enterprise_url,
            "partner_url": self.partner_url,
        }
        if self.session_id is not None:
            document["session_id"] = self.session_id
        return document


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"cannot store a {type(value).__name__} as JSON")


def encode_fields(fields: dict[str, FieldValue]) -> str:
    """Fields as JSON: numbers and booleans stay typed, dates become ISO 8601 strings."""
    return json.dumps(fields, default=_json_default, ensure_ascii=False, separators=(",", ":"))


class Inbox(ABC):
    """Durable storage behind one interface (SQLite now; PostgreSQL can follow)."""

    @abstractmethod
    async def store(self, incoming: IncomingMessage) -> StoreResult:
        """Store every notification of a message in one durable transaction."""

    @abstractmethod
    async def check_writable(self) -> None:
        """Raise :class:`InboxError` unless a write transaction can be opened now."""

    @abstractmethod
    async def list(self, *, limit: int, after_id: int = 0) -> list[StoredNotification]:
        """Stored notifications in arrival order, after ``after_id``."""

    @abstractmethod
    async def get(self, inbox_id: int) -> StoredNotification | None:
        """One stored notification by its inbox ID."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections; pending stores have finished when this returns."""
