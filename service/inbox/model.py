"""The inbox's values: what is stored, what a store answers, what is read back, and the
errors an inbox raises. No SQL and no I/O here."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, get_args

from service.soap import OutboundMessage

# A notification's delivery state.
State = Literal["pending", "delivered", "dead"]
STATES: tuple[State, ...] = get_args(State)
PENDING: Final = "pending"
DELIVERED: Final = "delivered"
DEAD: Final = "dead"

DeliveryEventKind = Literal["delivered", "failed", "dead", "retried"]


class InboxError(Exception):
    """The inbox could not do what was asked; the message says why. ``storage``: the
    storage itself failed (full, failing, unreachable, held by another writer too long),
    not what was asked of it, so every write fails alike until it recovers."""

    def __init__(self, message: str, *, storage: bool = False) -> None:
        super().__init__(message)
        self.storage = storage


class MissingFolderError(InboxError):
    """A SQLite inbox whose folder does not exist, where it was not to be created: a
    mistyped inbox.url would otherwise start an inbox nobody reads."""

    def __init__(self, database: Path) -> None:
        folder = database.parent
        super().__init__(
            f"the folder {folder} does not exist, so the inbox {database} cannot be created "
            f"there: correct the URL, or create the folder (`mkdir -p {folder}`; `omgate "
            "serve --create-inbox-dir` creates it at start)")
        self.folder = folder


LARGEST_ID = 2**63 - 1  # an inbox id fits a signed 64-bit column
_ID_DIGITS = re.compile(r"[0-9]{1,19}")  # int() refuses more than 4,300 digits (ValueError)


def inbox_id_of(text: str, *, least: int = 1) -> int | None:
    """The inbox id ``text`` names (at least ``least``), or None: the console's pages and
    the tools read ids a person typed, which SQLite cannot take past 64 bits."""
    if _ID_DIGITS.fullmatch(text) and least <= (number := int(text)) <= LARGEST_ID:
        return number
    return None

@dataclass(frozen=True)
class IncomingMessage:
    """A parsed message plus what the receiver knows about its arrival."""

    message: OutboundMessage
    endpoint: str
    received_at: dt.datetime
    keep_session_id: bool = False
    # the client chain it arrived with (the registry's key; None: none was asked for)
    chain_sha256: str | None = None


@dataclass(frozen=True)
class DuplicateConflict:
    """A redelivery of a stored notification that says something else."""

    inbox_id: int  # the notification stored first, which stays as it is
    notification_id: str
    stored_sha256: str
    redelivered_sha256: str


@dataclass(frozen=True)
class StoreResult:
    new: int
    duplicates: int  # redeliveries identical to what is stored
    conflicts: tuple[DuplicateConflict, ...] = ()  # redeliveries that differ


@dataclass(frozen=True)
class ListedNotification:
    """A notification as a list shows it: never its fields nor its SessionId, which a
    page of many large ones would otherwise read and decode whole."""

    id: int
    endpoint: str
    notification_id: str
    sobject_type: str | None
    record_id: str | None
    received_at: str
    state: State
    attempts: int
    last_error: str | None


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
    state: State = PENDING
    attempts: int = 0
    last_error: str | None = None
    delivered_at: str | None = None
    content_sha256: str | None = None  # None: stored by an omgate that kept no digest
    conflicts: int = 0  # redeliveries whose content differed
    # the client chain it arrived with, as the registry keys it (None: no certificate was
    # asked for, or stored before schema version 6); the console links it, no JSON has it
    chain_sha256: str | None = None

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
            "state": self.state,
            "attempts": self.attempts,
            "last_error": self.last_error,
            "delivered_at": self.delivered_at,
            "content_sha256": self.content_sha256,
            "conflicts": self.conflicts,
        }
        if self.session_id is not None:
            document["session_id"] = self.session_id
        return document

    def delivery_document(self) -> dict[str, Any]:
        """What a webhook or handler receives: the notification, without delivery state."""
        return {key: value for key, value in self.to_json().items()
                if key not in ("state", "attempts", "last_error", "delivered_at",
                               "content_sha256", "conflicts")}


@dataclass(frozen=True)
class RecordedConflict:
    """What a conflicting redelivery said (the stored notification stays the first)."""

    content_sha256: str
    endpoint: str
    action_id: str
    sobject_type: str | None
    record_id: str | None
    fields: dict[str, Any]
    received_at: str

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class InboxStats:
    pending: int
    dead: int
    oldest_pending_received_at: dt.datetime | None


@dataclass(frozen=True)
class DeliveryEvent:
    """One step of a notification's delivery: an attempt (delivered, failed and to be tried
    again, failed for the last time: dead) or an operator's retry."""

    at: dt.datetime
    kind: DeliveryEventKind
    error: str | None
