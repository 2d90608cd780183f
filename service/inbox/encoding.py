"""Notifications as rows and rows as values: the JSON of fields, content digests, the rows
a store binds (the same for every backend) and the values a read builds from rows."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import orjson

from service.inbox.model import (
    DeliveryEvent,
    DuplicateConflict,
    IncomingMessage,
    ListedNotification,
    RecordedConflict,
    StoredNotification,
)
from service.soap import FieldValue, Notification, id_key

# One message's rows as its backend binds them, made by :meth:`NotificationStore.prepare`.
Rows = list[dict[str, Any]]
# What a notification says, for its digest: not who sent it when, nor the SessionId.
CONTENT_COLUMNS = ("endpoint", "action_id", "sobject_type", "record_id", "fields")
CONFLICT_COLUMNS = ("content_sha256", *CONTENT_COLUMNS, "received_at")


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"cannot store a {type(value).__name__} as JSON")


_PLAIN_TYPES = frozenset((str, int, bool, type(None)))


def _plain(value: Any) -> bool:
    """Only text, whole numbers, booleans and nulls (nested or not): what orjson writes
    exactly as json.dumps does (a float it may write otherwise, a date it would not call
    _json_default for)."""
    if type(value) is not dict:
        return type(value) in _PLAIN_TYPES
    for item in value.values():
        if type(item) not in _PLAIN_TYPES and not (type(item) is dict and _plain(item)):
            return False
    return True


def _json_bytes(value: Any, *, sort_keys: bool = False, plain: bool | None = None) -> bytes:
    """Compact JSON in UTF-8, non-ASCII as is: json.dumps's text, by orjson where it is the
    same (fields without a WSDL's types: nearly always). ``plain``: what :func:`_plain` says
    of ``value``, when the caller knows it."""
    if _plain(value) if plain is None else plain:
        try:  # not contextlib.suppress: this runs for every notification, twice
            return orjson.dumps(value, option=orjson.OPT_SORT_KEYS if sort_keys else 0)
        except orjson.JSONEncodeError:  # an integer past 64 bits
            pass
    return json.dumps(value, default=_json_default, ensure_ascii=False, separators=(",", ":"),
                      sort_keys=sort_keys).encode()


def _json(value: Any, *, sort_keys: bool = False, plain: bool | None = None) -> str:
    """:func:`_json_bytes` as text."""
    return _json_bytes(value, sort_keys=sort_keys, plain=plain).decode()


def encode_fields(fields: dict[str, FieldValue]) -> str:
    """Fields as JSON: numbers and booleans stay typed, dates become ISO 8601 strings."""
    return _json(fields)


def isoformat(value: Any) -> str | None:
    if value is None:
        return None
    return value.isoformat() if isinstance(value, dt.datetime) else str(value)


def _digest(content: Mapping[str, Any], *, plain: bool | None = None) -> str:
    return hashlib.sha256(_json_bytes(content, sort_keys=True, plain=plain)).hexdigest()


def content_digest(row: Mapping[str, Any]) -> str:
    """SHA-256 of a canonical encoding of what a notification says: its CONTENT_COLUMNS as
    stored (so a row about to be stored and one read back give the same digest), the
    fields by value whatever their order."""
    content = {name: row[name] for name in CONTENT_COLUMNS}
    content["fields"] = json.loads(row["fields"])
    return _digest(content)


def conflict_with(row: Mapping[str, Any], stored: Mapping[str, Any]) -> DuplicateConflict | None:
    """The conflict a duplicate ``row`` makes with the ``stored`` notification, if it differs."""
    stored_sha256 = stored["content_sha256"] or content_digest(stored)
    if stored_sha256 == row["content_sha256"]:
        return None
    return DuplicateConflict(stored["id"], row["notification_id"], stored_sha256,
                             row["content_sha256"])


def conflict_values(conflict: DuplicateConflict, row: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters of ConflictStatements.record (and .count)."""
    return {"inbox_id": conflict.inbox_id, **{name: row[name] for name in CONFLICT_COLUMNS}}


def row_values(incoming: IncomingMessage) -> list[dict[str, Any]]:
    """One row per notification, the same for every backend."""
    message = incoming.message
    session_id = (
        message.session_id.value if incoming.keep_session_id and message.session_id else None
    )
    shared = {
        "org_key": id_key(message.organization_id),
        "organization_id": message.organization_id,
        "action_id": message.action_id,
        "endpoint": incoming.endpoint,
        "enterprise_url": message.enterprise_url,
        "partner_url": message.partner_url,
        "session_id": session_id,
        "received_at": incoming.received_at,
        "chain_sha256": incoming.chain_sha256,
    }
    return [_row(shared, notification) for notification in message.notifications]


def _row(shared: dict[str, Any], notification: Notification) -> dict[str, Any]:
    record_id, fields = notification.record_id, notification.fields
    row = {
        **shared,
        "notification_key": id_key(notification.id),
        "notification_id": notification.id,
        "sobject_type": notification.sobject_type,
        "record_id": record_id,
        "record_key": id_key(record_id) if record_id else None,
    }
    # the fields are judged plain once, for their text and for the digest (the other
    # content columns are text or null)
    plain = _plain(fields)
    row["fields"] = _json(fields, plain=plain)
    # content_digest(row) without decoding the fields just encoded: dumping the values
    # gives the same text as dumping what decoding them gives back.
    content = {name: row[name] for name in CONTENT_COLUMNS}
    content["fields"] = fields
    row["content_sha256"] = _digest(content, plain=plain)
    return row


def digests(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The parameters of ConflictStatements.set_digest for rows stored without a digest."""
    return [{"id": row["id"], "content_sha256": content_digest(row)} for row in rows]


def stored_notification(row: Mapping[str, Any]) -> StoredNotification:
    """A notification as read (timestamps as a backend returns them: text or datetime)."""
    values = dict(row)
    values["fields"] = json.loads(values["fields"])
    values["received_at"] = isoformat(values["received_at"])
    values["delivered_at"] = isoformat(values["delivered_at"])
    return StoredNotification(**values)


def listed_notification(row: Mapping[str, Any]) -> ListedNotification:
    """A notification as a list reads it (its LISTED_COLUMNS)."""
    return ListedNotification(**{**row, "received_at": isoformat(row["received_at"])})


def recorded_conflict(row: Mapping[str, Any]) -> RecordedConflict:
    values = dict(row)
    values["fields"] = json.loads(values["fields"])
    values["received_at"] = isoformat(values["received_at"])
    return RecordedConflict(**values)


def delivery_event(row: Mapping[str, Any]) -> DeliveryEvent:
    at = row["at"]
    return DeliveryEvent(at if isinstance(at, dt.datetime) else dt.datetime.fromisoformat(at),
                         row["kind"], row["error"])
