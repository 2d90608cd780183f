"""Build outbound messages that match a WSDL, with a sample value for each field type."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from service.soap import NotificationSchema

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
    body = f"""<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"
    xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
 <soapenv:Body>
  <notifications xmlns="http://soap.sforce.com/2005/09/outbound">
   <OrganizationId>00D5g00000AbCdEEAU</OrganizationId>
   <ActionId>04k5g00000AbCdEAAA</ActionId>
   <SessionId xsi:nil="true"/>
   <EnterpriseUrl>https://example.my.salesforce.com/services/Soap/c/60.0</EnterpriseUrl>
   <PartnerUrl>https://example.my.salesforce.com/services/Soap/u/60.0</PartnerUrl>
   <Notification>
    <Id>{notification_id}</Id>
    <sObject xsi:type="sf:{schema.sobject_type}" xmlns:sf="{schema.sobject_namespace}">
     {"".join(fields_xml)}
    </sObject>
   </Notification>
  </notifications>
 </soapenv:Body>
</soapenv:Envelope>"""
    return body.encode(), expected
