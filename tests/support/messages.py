"""Outbound messages built for tests: a generic builder and one that matches a WSDL."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from service.soap import NotificationSchema

ENTERPRISE_SOBJECT_NS = "urn:sobject.enterprise.soap.sforce.com"

ENVELOPE = """<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"
    xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
 <soapenv:Body>
  <notifications xmlns="http://soap.sforce.com/2005/09/outbound">
   <OrganizationId>{organization_id}</OrganizationId>
   <ActionId>{action_id}</ActionId>
   <SessionId xsi:nil="true"/>
   <EnterpriseUrl>https://example.my.salesforce.com/services/Soap/c/60.0/00Dxx0000001gPF</EnterpriseUrl>
   <PartnerUrl>https://example.my.salesforce.com/services/Soap/u/60.0/00Dxx0000001gPF</PartnerUrl>
   {notifications}
  </notifications>
 </soapenv:Body>
</soapenv:Envelope>"""


def notification(notification_id: str = "04lxx000000CaSdAAK", fields: str = "", *,
                 sobject_attrs: str = 'xsi:type="sf:Account"',
                 namespace: str = ENTERPRISE_SOBJECT_NS,
                 record_id: str | None = "001xx000003DGb2AAG") -> str:
    """One Notification; fields use the prefix ``sf``, bound to ``namespace``."""
    record = f"<sf:Id>{record_id}</sf:Id>" if record_id else ""
    return (f"<Notification><Id>{notification_id}</Id>"
            f'<sObject {sobject_attrs} xmlns:sf="{namespace}">{record}{fields}</sObject>'
            "</Notification>")


def envelope(*notifications: str, organization_id: str = "00Dxx0000001gPFEAY",
             action_id: str = "04kxx00000000blAAA") -> bytes:
    return ENVELOPE.format(notifications="".join(notifications),
                           organization_id=organization_id, action_id=action_id).encode()


SAMPLES: dict[str, tuple[str, Any]] = {
    "ID": ("a0B5g00000AbCdEFGH", "a0B5g00000AbCdEFGH"),
    "string": ("some text & more", "some text & more"),
    "double": ("12.5", 12.5),
    "boolean": ("true", True),
    "date": ("2024-02-29", dt.date(2024, 2, 29)),
    "dateTime": ("2024-02-29T13:45:00.000Z",
                 dt.datetime(2024, 2, 29, 13, 45, tzinfo=dt.UTC)),
    "int": ("42", 42),
    "decimal": ("10.25", Decimal("10.25")),
}


def message_for(schema: NotificationSchema, notification_id: str = "04l5g00000AbCdEAAA",
                overrides: dict[str, str] | None = None) -> tuple[bytes, dict[str, Any]]:
    """A message with every (non-repeated) field of the schema, and the values to expect."""
    overrides = overrides or {}
    fields_xml = []
    expected: dict[str, Any] = {}
    for spec in schema.fields.values():
        if spec.repeated:
            continue
        text, value = SAMPLES[spec.type_name]
        text = overrides.get(spec.name, text)
        escaped = text.replace("&", "&amp;").replace("<", "&lt;")
        fields_xml.append(f"<sf:{spec.name}>{escaped}</sf:{spec.name}>")
        expected[spec.name] = value
    body = envelope(
        notification(notification_id, "".join(fields_xml), record_id=None,
                     sobject_attrs=f'xsi:type="sf:{schema.sobject_type}"',
                     namespace=schema.sobject_namespace),
        organization_id="00D5g00000AbCdEEAU", action_id="04k5g00000AbCdEAAA",
    )
    return body, expected
