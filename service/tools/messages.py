"""Outbound messages for smoke tests and load, shaped like the ones Salesforce sends."""

from __future__ import annotations

import datetime as dt
import secrets
import string
from xml.sax.saxutils import escape

from service.soap import acknowledges

ALPHABET = string.ascii_letters + string.digits
TEST_ORGANIZATION_ID = "00D000000000001AAA"
TEST_ACTION_ID = "04k000000000001AAA"


def salesforce_id(prefix: str) -> str:
    """A random 18-character ID with a key prefix (``04l`` notification, ``001`` account)."""
    return prefix + "".join(secrets.choice(ALPHABET) for _ in range(12)) + "AAA"


def outbound_message(sobject_type: str = "Account", notifications: int = 1, *,
                     organization_id: str = TEST_ORGANIZATION_ID,
                     action_id: str = TEST_ACTION_ID) -> tuple[bytes, list[str]]:
    """A SOAP ``notifications`` message and the notification IDs it carries."""
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    ids = [salesforce_id("04l") for _ in range(notifications)]
    kind = escape(sobject_type)
    items = "".join(
        f"<Notification><Id>{notification_id}</Id>"
        f'<sObject xsi:type="sf:{kind}" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">'
        f"<sf:Id>{salesforce_id('001')}</sf:Id><sf:Name>omgate test {number}</sf:Name>"
        f"<sf:LastModifiedDate>{now}</sf:LastModifiedDate></sObject></Notification>"
        for number, notification_id in enumerate(ids, start=1))
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>'
        '<notifications xmlns="http://soap.sforce.com/2005/09/outbound">'
        f"<OrganizationId>{organization_id}</OrganizationId><ActionId>{action_id}</ActionId>"
        '<SessionId xsi:nil="true"/>'
        "<EnterpriseUrl>https://example.my.salesforce.com/services/Soap/c/62.0</EnterpriseUrl>"
        "<PartnerUrl>https://example.my.salesforce.com/services/Soap/u/62.0</PartnerUrl>"
        f"{items}</notifications></soapenv:Body></soapenv:Envelope>"
    )
    return body.encode(), ids


def describe_answer(status: int, body: bytes) -> tuple[str, str]:
    """("ack" | "fault" | "other", a one-line account of the answer)."""
    text = body.decode("utf-8", errors="replace")
    if status == 200 and acknowledges(body):
        return "ack", "acknowledged"
    if "Fault>" in text:
        start = text.find("<faultstring>")
        end = text.find("</faultstring>")
        reason = text[start + len("<faultstring>"):end] if 0 <= start < end else text[:200]
        return "fault", f"HTTP {status} SOAP fault: {reason}"
    return "other", f"HTTP {status}: {text[:200]!r}"
