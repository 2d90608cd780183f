"""Typed endpoints take only what xsd (and Salesforce) writes, and store what was sent
(the review that found Python's, isodate's and zeep's conversions taking more)."""

from __future__ import annotations

import asyncio
import datetime as dt
import http.server
import json
import threading
from typing import ClassVar

import pytest
from harness import WSDLS
from messages import message_for

from service.delivery.webhook import Webhook
from service.inbox import IncomingMessage, open_inbox
from service.soap import NotificationSchema, SoapFaultError, load_wsdl, parse_message

SHIPMENT = WSDLS / "gwestersf-Shipment__c.wsdl"


@pytest.mark.parametrize(("field", "text"), [
    # xsd:date is CCYY-MM-DD with an optional timezone, nothing more
    ("gwestr__Scheduled_Delivery__c", "2024-12-31garbage"),
    ("gwestr__Scheduled_Delivery__c", "2024-12-31T23:30:00-10:00"),
    ("gwestr__Scheduled_Delivery__c", "2024"),
    ("gwestr__Scheduled_Delivery__c", "2024-W01-1"),
    ("gwestr__Scheduled_Delivery__c", "2024-366"),
    # xsd:dateTime needs a date, a T, and hh:mm:ss
    ("CreatedDate", "2024-12-31"),
    ("CreatedDate", "2024-12-31 10:00:00"),
    ("CreatedDate", "2024-12-31T10"),
    ("CreatedDate", "20241231T100000Z"),
    ("CreatedDate", "2024-12-31T10:00:00+23:59"),  # xsd timezones end at 14:00
    # xsd:double: NaN, INF, -INF and decimal/exponent forms, not Python's float()
    ("gwestr__Weight__c", "nan"),
    ("gwestr__Weight__c", "Infinity"),
    ("gwestr__Weight__c", "1_000"),
    ("gwestr__Weight__c", "\u0661\u0662"),  # Arabic-Indic digits
    # xsd:boolean: surrounding XML whitespace only, not a no-break space
    ("gwestr__Rush__c", "true\u00a0"),
])
def test_a_value_that_is_not_xsd_is_refused_not_reinterpreted(field, text):
    _assert_refused(load_wsdl(SHIPMENT), field, text)


def _assert_refused(schema: NotificationSchema, field: str, text: str) -> None:
    """A message whose ``field`` is ``text`` is refused as not matching the WSDL."""
    body, _ = message_for(schema, overrides={field: text})
    try:
        fields = parse_message(body, schema).notifications[0].fields
    except SoapFaultError as error:
        assert error.reason == "wsdl_mismatch"
        return
    pytest.fail(f"{text!r} accepted for {field} and typed as {fields[field]!r}")


def test_a_date_time_whose_offset_python_cannot_hold_is_a_client_fault_not_a_store_failure(
        tmp_path):
    """'+25:00' passed the WSDL; storing it then raised, and omgate answered 500
    store_failed ('please retry'), so Salesforce retries a message that can never be stored
    and the operator is told the inbox is failing."""
    schema = load_wsdl(SHIPMENT)
    body, _ = message_for(schema, overrides={"CreatedDate": "2024-12-31T10:00:00.000+25:00"})

    async def scenario() -> None:
        try:
            message = parse_message(body, schema)
        except SoapFaultError as error:
            assert error.reason == "wsdl_mismatch"
            return
        inbox = await open_inbox(f"sqlite:///{tmp_path / 'inbox.db'}")
        try:
            await inbox.store(IncomingMessage(message, "/typed", dt.datetime.now(dt.UTC)))
        finally:
            await inbox.close()

    asyncio.run(scenario())


class _Receiver(http.server.BaseHTTPRequestHandler):
    bodies: ClassVar[list[bytes]] = []

    def do_POST(self) -> None:
        self.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def _strict_json(body: bytes) -> object:
    def refuse(token: str) -> object:
        raise ValueError(f"{token} is not JSON (RFC 8259)")
    return json.loads(body, parse_constant=refuse)


@pytest.mark.parametrize("text", ["NaN", "INF", "-INF", "1e400"])
def test_a_typed_double_reaches_the_webhook_as_json(tmp_path, text):
    """xsd:double allows NaN and INF (and 1e400 rounds to INF); Python's json writes them
    as NaN and Infinity, which no strict JSON reader accepts: the webhook refuses every
    attempt and the notification ends dead-lettered."""
    schema = load_wsdl(SHIPMENT)
    body, _ = message_for(schema, overrides={"gwestr__Weight__c": text})
    try:
        message = parse_message(body, schema)
    except SoapFaultError:
        return  # refusing non-finite doubles at the door is a fix too
    server = http.server.HTTPServer(("127.0.0.1", 0), _Receiver)
    _Receiver.bodies = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    async def scenario() -> None:
        inbox = await open_inbox(f"sqlite:///{tmp_path / 'inbox.db'}")
        webhook = Webhook(f"http://127.0.0.1:{server.server_address[1]}/in")
        try:
            await inbox.store(IncomingMessage(message, "/typed", dt.datetime.now(dt.UTC)))
            [stored] = await inbox.list(limit=10)
            await webhook(stored, 1)
        finally:
            await webhook.aclose()
            await inbox.close()

    try:
        asyncio.run(scenario())
    finally:
        server.shutdown()
        server.server_close()
    [sent] = _Receiver.bodies
    _strict_json(sent)


@pytest.mark.parametrize("text", ["2147483648", "-2147483649", "1_000", "\u0661\u0662"])
def test_an_xsd_int_outside_its_range_or_lexical_space_is_refused(tmp_path, text):
    """Salesforce types whole-number fields (NumberOfEmployees, ...) xsd:int: 32 bits,
    ASCII digits with an optional sign."""
    wsdl = SHIPMENT.read_text().replace(
        '<element name="gwestr__Weight__c" nillable="true" minOccurs="0" type="xsd:double"/>',
        '<element name="gwestr__Weight__c" nillable="true" minOccurs="0" type="xsd:int"/>')
    path = tmp_path / "int.wsdl"
    path.write_text(wsdl)
    schema = load_wsdl(path)
    assert schema.fields["gwestr__Weight__c"].type_name == "int"
    _assert_refused(schema, "gwestr__Weight__c", text)
