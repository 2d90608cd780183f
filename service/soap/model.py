"""The values an outbound message carries, as plain immutable data."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TypeAlias

from service.text import clipped

FieldValue: TypeAlias = (
    str | int | float | bool | Decimal | dt.date | dt.datetime | dt.time
    | dict[str, "FieldValue"] | None
)

OUTBOUND_NS = "http://soap.sforce.com/2005/09/outbound"
SOAP_ENV_NS = "http://schemas.xmlsoap.org/soap/envelope/"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
MAX_NOTIFICATIONS = 100
# A fault quotes names and values from the message; whatever it quotes, it stays this short.
FAULT_MESSAGE_CHARACTERS = 1000


@dataclass(frozen=True)
class Secret:
    """A value that must never reach a log line: its repr and str are redacted."""

    value: str = field(repr=False)

    def __str__(self) -> str:
        return "<redacted>"

    def __repr__(self) -> str:
        return "Secret(<redacted>)"


@dataclass(frozen=True)
class Notification:
    id: str
    sobject_type: str | None
    sobject_namespace: str | None
    fields: dict[str, FieldValue]

    @property
    def record_id(self) -> str | None:
        value = self.fields.get("Id")
        return value if isinstance(value, str) else None


@dataclass(frozen=True)
class ParseWarning:
    """Something accepted but worth an operator's attention (for example a 15-character ID)."""

    code: str
    where: str
    message: str


@dataclass(frozen=True)
class OutboundMessage:
    organization_id: str
    action_id: str
    session_id: Secret | None
    enterprise_url: str | None
    partner_url: str | None
    notifications: tuple[Notification, ...]
    warnings: tuple[ParseWarning, ...] = ()


class SoapFaultError(Exception):
    """The message cannot be accepted; ``reason`` is a stable code for logs and metrics.

    ``message`` is safe to send back to the sender and to log: it never quotes
    the SessionId, and it is at most FAULT_MESSAGE_CHARACTERS long.
    """

    def __init__(self, reason: str, message: str, *, status: int = 400,
                 fault_code: str = "Client") -> None:
        message = clipped(message, FAULT_MESSAGE_CHARACTERS)
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.status = status
        self.fault_code = fault_code


def id_key(salesforce_id: str) -> str:
    """The case-sensitive 15-character form that 15- and 18-character IDs share."""
    return salesforce_id[:15]
