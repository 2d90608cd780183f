"""WSDL typing through zeep: every real WSDL loads and types a message built for it."""

from __future__ import annotations

import pytest
from harness import PAYLOADS, WSDLS
from messages import message_for

from service.soap import SoapFaultError, WsdlError, load_wsdl, parse_message

ALL_WSDLS = sorted(WSDLS.glob("*.wsdl"))


@pytest.mark.parametrize("path", ALL_WSDLS, ids=lambda path: path.name)
def test_every_wsdl_types_a_message_built_for_it(path):
    schema = load_wsdl(path)
    body, expected = message_for(schema)
    fields = parse_message(body, schema).notifications[0].fields
    assert fields == expected
    for name, value in expected.items():
        assert type(fields[name]) is type(value), name


def test_shipment_wsdl_knows_its_field_types():
    schema = load_wsdl(WSDLS / "gwestersf-Shipment__c.wsdl")
    assert schema.sobject_type == "gwestr__Shipment__c"
    types = {name: spec.type_name for name, spec in schema.fields.items()}
    assert types["gwestr__Weight__c"] == "double"
    assert types["gwestr__Rush__c"] == "boolean"
    assert types["gwestr__Scheduled_Delivery__c"] == "date"
    assert types["CreatedDate"] == "dateTime"
    assert schema.fields["Id"].required


def test_fifteen_character_ids_pass_the_wsdl_with_warnings():
    schema = load_wsdl(WSDLS / "mulesoft-SFWonOpportunity-trimmed.wsdl")
    message = parse_message((PAYLOADS / "mulesoft-opportunity-15char-ids.xml").read_bytes(),
                            schema)
    assert message.notifications[0].fields["AccountId"] == "001Q000000SvOoG"
    assert {warning.where for warning in message.warnings} == {
        "OrganizationId", "sObject Id", "field AccountId"}


@pytest.mark.parametrize(("field", "text", "words"), [
    ("gwestr__Weight__c", "heavy", ["gwestr__Weight__c", "'heavy'", "double"]),
    ("gwestr__Rush__c", "maybe", ["gwestr__Rush__c", "'maybe'", "boolean"]),
    ("gwestr__Scheduled_Delivery__c", "31/12/2024", ["gwestr__Scheduled_Delivery__c", "date"]),
    ("CreatedDate", "yesterday", ["CreatedDate", "dateTime"]),
])
def test_a_value_that_does_not_match_is_refused_saying_where(field, text, words):
    schema = load_wsdl(WSDLS / "gwestersf-Shipment__c.wsdl")
    body, _ = message_for(schema, overrides={field: text})
    with pytest.raises(SoapFaultError) as caught:
        parse_message(body, schema)
    assert caught.value.reason == "wsdl_mismatch"
    assert "Notification 1 (Id 04l5g00000AbCdEAAA)" in caught.value.message
    for word in words:
        assert word in caught.value.message


def test_unknown_field_and_wrong_type_are_refused():
    schema = load_wsdl(WSDLS / "comsave-DiscountRule__c.wsdl")
    with pytest.raises(SoapFaultError) as caught:
        parse_message((PAYLOADS / "amplabs-create_account.xml").read_bytes(), schema)
    assert "sObject type" in caught.value.message
    assert "Account" in caught.value.message and "DiscountRule__c" in caught.value.message

    body, _ = message_for(schema)
    body = body.replace(b"<sf:Name>", b"<sf:Surprise__c>1</sf:Surprise__c><sf:Name>")
    with pytest.raises(SoapFaultError) as caught:
        parse_message(body, schema)
    assert "field Surprise__c" in caught.value.message


def test_wsdl_that_reaches_for_the_network_is_refused(tmp_path):
    wsdl = (WSDLS / "comsave-ObjectToBeRemoved__c.wsdl").read_text()
    wsdl = wsdl.replace(
        '<import namespace="urn:enterprise.soap.sforce.com"/>',
        '<import namespace="urn:enterprise.soap.sforce.com" '
        'schemaLocation="http://203.0.113.9/evil.xsd"/>', 1)
    assert "203.0.113.9" in wsdl
    path = tmp_path / "remote.wsdl"
    path.write_text(wsdl)
    with pytest.raises(WsdlError) as caught:
        load_wsdl(path)
    assert str(path) in str(caught.value)


def test_not_an_outbound_wsdl_is_refused(tmp_path):
    path = tmp_path / "other.wsdl"
    path.write_text('<definitions xmlns="http://schemas.xmlsoap.org/wsdl/" '
                    'targetNamespace="urn:x"/>')
    with pytest.raises(WsdlError) as caught:
        load_wsdl(path)
    assert str(path) in str(caught.value)
