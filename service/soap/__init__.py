"""Salesforce Outbound Messaging SOAP: parsing, WSDL typing and the answers. No I/O."""

from service.soap.documents import ACK, CLIENT_CERT_REFUSED, CONTENT_TYPE, NOT_NOTIFICATIONS, fault
from service.soap.model import (
    MAX_NOTIFICATIONS,
    FieldValue,
    Notification,
    OutboundMessage,
    ParseWarning,
    Secret,
    SoapFaultError,
    id_key,
)
from service.soap.parse import acknowledges, parse_message
from service.soap.wsdl import NotificationSchema, WsdlError, load_wsdl

__all__ = [
    "ACK",
    "CLIENT_CERT_REFUSED",
    "CONTENT_TYPE",
    "MAX_NOTIFICATIONS",
    "NOT_NOTIFICATIONS",
    "FieldValue",
    "Notification",
    "NotificationSchema",
    "OutboundMessage",
    "ParseWarning",
    "Secret",
    "SoapFaultError",
    "WsdlError",
    "acknowledges",
    "fault",
    "id_key",
    "load_wsdl",
    "parse_message",
]
