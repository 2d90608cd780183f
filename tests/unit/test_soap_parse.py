"""The hardened SOAP parser, without sockets."""

from __future__ import annotations

import tracemalloc

import pytest
from harness import CONTACTS_SESSION_ID, PAYLOADS
from messages import envelope, notification
from soap_parse_cases import XXE, billion_laughs

from service.soap import MAX_NOTIFICATIONS, SoapFaultError, parse_message
from service.soap import parse as soap_parse

VALID_PAYLOADS = sorted(
    path for path in PAYLOADS.glob("*.xml")
    if path.name not in ("aspnet-empty.xml", "aspnet-ack-response.xml")
)


def fault_reason(body: bytes) -> str:
    with pytest.raises(SoapFaultError) as caught:
        parse_message(body)
    return caught.value.reason


@pytest.mark.parametrize("path", VALID_PAYLOADS, ids=lambda path: path.name)
def test_every_real_payload_parses(path):
    message = parse_message(path.read_bytes())
    assert message.notifications
    for item in message.notifications:
        assert len(item.id) in (15, 18)
        assert item.sobject_type
        assert item.record_id


def test_batch_payload_keeps_every_notification_in_order():
    message = parse_message((PAYLOADS / "amplabs-batch_update_contacts.xml").read_bytes())
    assert [n.id for n in message.notifications] == [
        "04lxx000000CaSeAAK", "04lxx000000CaSfAAK", "04lxx000000CaSgAAK"]
    assert message.organization_id == "00Dxx0000001gPFEAY"
    assert message.action_id == "04kxx00000000blBAA"
    assert message.enterprise_url.endswith("/services/Soap/c/60.0/00Dxx0000001gPF")
    assert message.partner_url.endswith("/services/Soap/u/60.0/00Dxx0000001gPF")
    assert message.notifications[0].fields == {
        "Id": "003xx000004TmiQAAS",
        "CreatedDate": "2026-08-26T23:25:15.000Z",
        "LastModifiedDate": "2026-09-09T00:41:57.000Z",
    }


def test_byte_order_mark_and_custom_types_are_fine():
    message = parse_message((PAYLOADS / "aspnet-leads-bom.xml").read_bytes())
    assert [n.sobject_type for n in message.notifications] == ["Lead1", "Lead2", "Lead3"]
    assert message.notifications[0].fields["IsConverted"] == "false"


def test_session_id_is_kept_but_never_printed():
    message = parse_message((PAYLOADS / "aspnet-contacts-2.xml").read_bytes())
    assert message.session_id is not None
    assert message.session_id.value == CONTACTS_SESSION_ID
    assert CONTACTS_SESSION_ID not in repr(message)
    assert CONTACTS_SESSION_ID not in str(message.session_id)


def test_omitted_field_stays_absent_and_nil_is_none():
    omitted = parse_message((PAYLOADS / "amplabs-null_field_omitted.xml").read_bytes())
    assert "Industry" not in omitted.notifications[0].fields
    populated = parse_message((PAYLOADS / "amplabs-field_populated.xml").read_bytes())
    assert populated.notifications[0].fields["Industry"] == "Agriculture"
    nil = parse_message(envelope(notification(fields='<sf:Industry xsi:nil="true"/>')))
    assert nil.notifications[0].fields["Industry"] is None
    empty = parse_message(envelope(notification(fields="<sf:Industry/>")))
    assert empty.notifications[0].fields["Industry"] == ""


@pytest.mark.parametrize(("field", "value"), [
    ('<sf:Industry xsi:nil="1"/>', None),
    ('<sf:Industry xsi:nil=" true ">ignored</sf:Industry>', None),
    ('<sf:Industry other="x" xsi:nil="true"/>', None),
    ('<sf:Industry xsi:nil="false">Agriculture</sf:Industry>', "Agriculture"),
    ('<sf:Industry other="x">Agriculture</sf:Industry>', "Agriculture"),
    ('<sf:Owner><sf:Name xsi:nil="true"/><sf:Id>005000000000001AAA</sf:Id></sf:Owner>',
     {"Name": None, "Id": "005000000000001AAA"}),
])
def test_a_field_is_nil_only_by_its_xsi_nil_whatever_other_attributes_it_has(field, value):
    message = parse_message(envelope(notification(fields=field)))
    [name] = [name for name in message.notifications[0].fields if name != "Id"]
    assert message.notifications[0].fields[name] == value


def test_sobject_type_is_resolved_by_namespace_not_prefix():
    other_prefix = notification(sobject_attrs='xsi:type="q:Contact" '
                                              'xmlns:q="urn:sobject.enterprise.soap.sforce.com"',
                                namespace="urn:other")
    item = parse_message(envelope(other_prefix)).notifications[0]
    assert (item.sobject_namespace, item.sobject_type) == (
        "urn:sobject.enterprise.soap.sforce.com", "Contact")
    partner = notification(sobject_attrs='xsi:type="sf:Contact"',
                           namespace="urn:sobject.partner.soap.sforce.com")
    item = parse_message(envelope(partner)).notifications[0]
    assert item.sobject_namespace == "urn:sobject.partner.soap.sforce.com"


def test_undeclared_type_prefix_is_refused():
    undeclared = notification(sobject_attrs='xsi:type="nope:Contact"')
    assert fault_reason(envelope(undeclared)) == "invalid_sobject_type"


def test_short_ids_are_accepted_with_a_warning():
    message = parse_message((PAYLOADS / "mulesoft-opportunity-15char-ids.xml").read_bytes())
    assert message.organization_id == "00DQ0000000EB93"
    places = {warning.where for warning in message.warnings}
    assert places == {"OrganizationId", "sObject Id"}
    assert not parse_message((PAYLOADS / "amplabs-create_account.xml").read_bytes()).warnings


@pytest.mark.parametrize(("body", "reason"), [
    (b"", "empty_body"),
    (b"<not-closed>", "malformed_xml"),
    (b"<html><body>hello</body></html>", "not_soap_envelope"),
    (b'<e:Envelope xmlns:e="http://www.w3.org/2003/05/soap-envelope"><e:Body/></e:Envelope>',
     "not_soap_envelope"),
    (b'<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/"><e:Body/></e:Envelope>',
     "no_notifications"),
    ((PAYLOADS / "aspnet-empty.xml").read_bytes(), "no_notification"),
    ((PAYLOADS / "aspnet-ack-response.xml").read_bytes(), "no_notifications"),
], ids=["empty", "malformed", "html", "soap12", "empty-body", "no-notification", "ack"])
def test_refusals_name_the_reason(body, reason):
    assert fault_reason(body) == reason


def test_more_than_one_hundred_notifications_are_refused():
    items = [notification(f"04lxx000000C{index:04d}AK") for index in range(MAX_NOTIFICATIONS)]
    assert len(parse_message(envelope(*items)).notifications) == MAX_NOTIFICATIONS
    items.append(notification("04lxx000000CzzzzAK"))
    assert fault_reason(envelope(*items)) == "too_many_notifications"


@pytest.mark.parametrize("bad_id", ["short", "04lxx000000CaSdAAK!", "04lxx000000CaSdAAKXX"])
def test_notification_ids_must_be_salesforce_ids(bad_id):
    assert fault_reason(envelope(notification(bad_id))) == "invalid_id"


def test_repeated_field_is_refused_with_where():
    body = envelope(notification(fields="<sf:Name>a</sf:Name><sf:Name>b</sf:Name>"))
    with pytest.raises(SoapFaultError) as caught:
        parse_message(body)
    assert "Notification 1 (Id 04lxx000000CaSdAAK)" in caught.value.message
    assert "'Name'" in caught.value.message


def test_a_repeated_nested_field_is_refused_with_its_path():
    body = envelope(notification(fields="<sf:Owner><sf:Address><sf:City>a</sf:City>"
                                        "<sf:City>b</sf:City></sf:Address></sf:Owner>"))
    with pytest.raises(SoapFaultError) as caught:
        parse_message(body)
    assert caught.value.message.startswith(
        "Notification 1 (Id 04lxx000000CaSdAAK), field Owner.Address: field 'City' appears twice")


def _python_peak(body: bytes) -> int:
    tracemalloc.start()
    try:
        parse_message(body)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_deeply_nested_fields_with_long_names_hold_memory_linear_in_the_body():
    """Each level of nesting wrote out its whole path for an error it might raise: 250
    levels of 4,000-character names held 127 MB for a 2 MB body (an attacker's review)."""
    depth, name = 250, "sf:" + "A" * 4000
    body = envelope(notification(fields=f"<{name}>" * depth + "x" + f"</{name}>" * depth))
    assert _python_peak(body) < 10 * len(body)


def test_namespaces_declared_around_the_notifications_are_bounded():
    """Each sObject's xsi:type is resolved among the namespaces in scope: 100,000 declared
    on the Envelope made 100 notifications cost two seconds (an attacker's review)."""
    # with soapenv, xsi and the notifications' own: one more than the most read
    declarations = " ".join(f'xmlns:n{i}="urn:n"'
                            for i in range(soap_parse.MAX_NAMESPACES - 2))
    many = envelope(notification()).decode().replace(
        "<soapenv:Envelope ", f"<soapenv:Envelope {declarations} ", 1)
    with pytest.raises(SoapFaultError) as caught:
        parse_message(many.encode())
    assert caught.value.reason == "malformed_xml"
    assert f"at most {soap_parse.MAX_NAMESPACES}" in caught.value.message
    fewer = many.replace('xmlns:n0="urn:n" ', "", 1)
    assert parse_message(fewer.encode()).notifications[0].sobject_type == "Account"


WIDE = {f"xxe-{codec}": XXE.decode().replace('"1.0"?>', f'"1.0" encoding="{codec}"?>')
        .encode(codec) for codec in ("utf-16", "utf-16-le", "utf-16-be", "utf-32",
                                     "utf-32-le", "utf-32-be")}


@pytest.mark.parametrize("fields", ["<Industry>&secret;</Industry>",
                                    "<Owner><Name>&secret;</Name></Owner>"],
                         ids=["field", "nested field"])
def test_an_entity_reference_that_got_past_the_prolog_check_still_refuses(fields):
    """Behind the DTD check, in case one ever slips past it: the sObject's fields are read
    from a tree that kept an unexpanded entity reference (a parser that does not resolve
    entities, as omgate's), and the reference refuses the message; nothing of it becomes
    a field's text."""
    from lxml import etree

    document = (f'<!DOCTYPE sObject [<!ENTITY secret SYSTEM "file:///etc/passwd">]>'
                f"<sObject>{fields}</sObject>").encode()
    sobject = etree.fromstring(document, etree.XMLParser(resolve_entities=False,
                                                         no_network=True))
    with pytest.raises(SoapFaultError) as refused:
        soap_parse._fields(sobject, "Notification 1")
    assert refused.value.reason == "dtd_forbidden"


@pytest.mark.parametrize("body", [XXE, billion_laughs(), *WIDE.values()],
                         ids=["xxe", "billion-laughs", *WIDE])
def test_dtds_and_entities_are_refused_before_parsing(body, monkeypatch):
    """In every encoding the parser reads, with or without a byte-order mark."""
    def never_parse() -> None:
        raise AssertionError("the XML parser saw a document that declares a DTD")

    monkeypatch.setattr(soap_parse, "_hardened_parser", never_parse)
    assert fault_reason(body) == "dtd_forbidden"


@pytest.mark.parametrize("codec", ["cp500", "cp037", "cp1140"])
def test_an_ebcdic_body_is_refused_before_parsing(codec, monkeypatch):
    """Its declaration is not ASCII, so the DTD scan cannot read it: a libxml2 built to
    read EBCDIC would be its only judge."""
    def never_parse() -> None:
        raise AssertionError("the XML parser saw an EBCDIC document")

    monkeypatch.setattr(soap_parse, "_hardened_parser", never_parse)
    body = ('<?xml version="1.0" encoding="IBM500"?>'
            + XXE.decode().partition("?>")[2]).encode(codec)
    with pytest.raises(SoapFaultError) as caught:
        parse_message(body)
    assert caught.value.reason == "malformed_xml" and "EBCDIC" in caught.value.message


@pytest.mark.parametrize("encoding", ["ISO-8859-1", "windows-1252", "UTF-16"])
def test_a_message_in_another_common_encoding_still_parses(encoding):
    text = envelope(notification(fields="<sf:Name>Gärtnerei Müller</sf:Name>")).decode()
    text = f'<?xml version="1.0" encoding="{encoding}"?>' + text.partition("?>")[2]
    [parsed] = parse_message(text.encode(encoding)).notifications
    assert parsed.fields["Name"] == "Gärtnerei Müller"


@pytest.mark.parametrize("encoding", ["UTF-7", "cp500", "ISO-2022-JP", "x-no-such-encoding"])
def test_an_encoding_that_could_hide_markup_is_refused(encoding):
    body = f'<?xml version="1.0" encoding="{encoding}"?><a/>'.encode()
    with pytest.raises(SoapFaultError) as caught:
        parse_message(body)
    assert caught.value.reason == "malformed_xml"
    assert encoding in caught.value.message


def test_an_acknowledgement_is_the_envelope_salesforce_reads_not_the_text():
    from service.soap import ACK, acknowledges

    envelope = ('<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/"><e:Body>'
                '<notificationsResponse xmlns="http://soap.sforce.com/2005/09/outbound">'
                "<Ack>{}</Ack></notificationsResponse></e:Body></e:Envelope>")
    assert acknowledges(ACK)
    assert acknowledges(envelope.format(" 1 ").encode())
    assert not acknowledges(envelope.format("false").encode())
    assert not acknowledges(b"<Ack>true</Ack>")  # no envelope: Salesforce retries
    assert not acknowledges(b"<html><body>&lt;Ack&gt;true<p><Ack>true</Ack></p></body></html>")
    assert not acknowledges(envelope.replace("2005/09/outbound", "x").format("true").encode())
    assert not acknowledges(b'<!DOCTYPE e [<!ENTITY t "true">]>' + ACK.split(b"?>", 1)[1])
