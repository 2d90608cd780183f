"""Read a SOAP 1.1 ``notifications`` message with a hardened XML parser.

No DTDs, no entities, no network; a document that declares a DTD is refused
outright. Without a WSDL every field value is a string (or ``None`` for
``xsi:nil``); with one, :mod:`service.soap.wsdl` types the values.
"""

from __future__ import annotations

import codecs
import functools
import re
import threading
from collections.abc import Iterator

from lxml import etree

from service.soap.documents import NOT_NOTIFICATIONS
from service.soap.model import (
    MAX_NOTIFICATIONS,
    OUTBOUND_NS,
    SOAP_ENV_NS,
    XSI_NS,
    FieldValue,
    Notification,
    OutboundMessage,
    ParseWarning,
    Secret,
    SoapFaultError,
)
from service.soap.wsdl import NotificationSchema, type_notification

SOAP12_ENV_NS = "http://www.w3.org/2003/05/soap-envelope"
_XSI_NIL = f"{{{XSI_NS}}}nil"
_XSI_TYPE = f"{{{XSI_NS}}}type"
_ID_LENGTHS = (15, 18)


def _new_hardened_parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        load_dtd=False,
        dtd_validation=False,
        no_network=True,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
        collect_ids=False,
    )


_PARSERS = threading.local()  # one per thread: an lxml parser is not shared between threads


def _hardened_parser() -> etree.XMLParser:
    parser: etree.XMLParser | None = getattr(_PARSERS, "parser", None)
    if parser is None:
        parser = _PARSERS.parser = _new_hardened_parser()
    return parser


def _prolog_declares_dtd(body: bytes) -> bool:
    """True when a DOCTYPE comes before the first element (checked before lxml sees it)."""
    position = 0
    while (start := body.find(b"<", position)) >= 0:
        if body.startswith(b"<!DOCTYPE", start):
            return True
        if body.startswith(b"<?", start):
            closing = b"?>"
        elif body.startswith(b"<!--", start):
            closing = b"-->"
        else:
            return False
        position = body.find(closing, start)
        if position < 0:
            return False
    return False


_DTD_FORBIDDEN = "Document type declarations (DTDs) and entities are not accepted."
# Byte-order marks, then the first bytes of "<?" without one (XML 1.0, appendix F).
_WIDE_ENCODINGS = (
    (b"\x00\x00\xfe\xff", "utf-32-be"), (b"\xff\xfe\x00\x00", "utf-32-le"),
    (b"\xfe\xff", "utf-16-be"), (b"\xff\xfe", "utf-16-le"),
    (b"\x00\x00\x00<", "utf-32-be"), (b"<\x00\x00\x00", "utf-32-le"),
    (b"\x00<", "utf-16-be"), (b"<\x00", "utf-16-le"),
)
_EBCDIC_DECLARATION = b"\x4c\x6f\xa7\x94"  # "<?xm" in EBCDIC (XML 1.0, appendix F)
_DECLARED_ENCODING = re.compile(
    rb"(?:\xef\xbb\xbf)?\s*<\?xml\s[^>]*?encoding\s*=\s*[\"']([^\"']{1,40})[\"']")
# Encodings in which markup is its ASCII bytes and nothing else is (unlike UTF-7's
# "+ADw-", EBCDIC, or ISO-2022's escape sequences, which can sit inside "<!DOCTYPE").
_ASCII_MARKUP_ENCODINGS = frozenset({
    "utf-8", "ascii", "shift_jis", "cp932", "euc_jp", "gb2312", "gbk", "gb18030", "big5",
    "euc_kr",
})


@functools.lru_cache(maxsize=64)
def _markup_is_ascii(encoding: str) -> bool:
    try:
        name = codecs.lookup(encoding).name
    except LookupError:
        return False
    return name in _ASCII_MARKUP_ENCODINGS or name.startswith(("iso8859-", "cp125"))


# How Salesforce begins every message: no other check of the encoding is needed.
_USUAL_DECLARATIONS = (b'<?xml version="1.0" encoding="UTF-8"?>',
                       b'<?xml version="1.0" encoding="utf-8"?>')


def _scannable(body: bytes) -> bytes:
    """The body in bytes where markup is ASCII, for the DTD scan; refuses an encoding in
    which it would not be (a DOCTYPE the scan cannot see must never reach the parser)."""
    if body.startswith(_USUAL_DECLARATIONS):
        return body
    for mark, encoding in _WIDE_ENCODINGS:
        if body.startswith(mark):
            return body.decode(encoding, errors="replace").encode()
    if body.startswith(_EBCDIC_DECLARATION):
        raise SoapFaultError("malformed_xml", "The body is in EBCDIC, which omgate does not "
                             "accept; send UTF-8.")
    declared = _DECLARED_ENCODING.match(body)
    if declared is not None:
        encoding = declared.group(1).decode("ascii", errors="replace")
        if not _markup_is_ascii(encoding):
            raise SoapFaultError("malformed_xml", f"The XML declaration names the encoding "
                                 f"{encoding!r}, which omgate does not accept; send UTF-8.")
    return body


def _parse_xml(body: bytes) -> etree._Element:
    if not body.strip():
        raise SoapFaultError("empty_body", "The request body is empty; expected a SOAP envelope.")
    if _prolog_declares_dtd(_scannable(body)):
        raise SoapFaultError("dtd_forbidden", _DTD_FORBIDDEN)
    try:
        root = etree.fromstring(body, _hardened_parser())
    except etree.XMLSyntaxError as error:
        raise SoapFaultError(
            "malformed_xml", f"The body is not well-formed XML: {error.msg}."
        ) from None
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None:
        raise SoapFaultError("dtd_forbidden", _DTD_FORBIDDEN)
    return root


def _tag(name: str) -> str:
    return f"{{{OUTBOUND_NS}}}{name}"


def _first_children(parent: etree._Element) -> dict[str, etree._Element]:
    """The first child element of each tag, in one pass."""
    first: dict[str, etree._Element] = {}
    for child in parent:
        if isinstance(child.tag, str):
            first.setdefault(child.tag, child)
    return first


def _first_child(parent: etree._Element, tag: str) -> etree._Element | None:
    """``parent.find(tag)`` for a namespaced tag, without ElementPath's Python layer."""
    return next(parent.iterchildren(tag), None)


def _refuse_an_entity(node: etree._Element) -> None:
    """A child that is not an element: an entity reference refuses the message (the
    parser keeps comments and processing instructions out)."""
    if isinstance(node, etree._Entity):
        raise SoapFaultError("dtd_forbidden", _DTD_FORBIDDEN)


def _child_elements(element: etree._Element) -> Iterator[etree._Element]:
    for child in element:
        if isinstance(child.tag, str):
            yield child
        else:
            _refuse_an_entity(child)


_ENVELOPE_TAG = f"{{{SOAP_ENV_NS}}}Envelope"
_BODY_TAG = f"{{{SOAP_ENV_NS}}}Body"
_NOTIFICATIONS_TAG = _tag("notifications")


def _notifications_element(root: etree._Element) -> etree._Element:
    if root.tag == f"{{{SOAP12_ENV_NS}}}Envelope":
        raise SoapFaultError(
            "not_soap_envelope",
            "This is a SOAP 1.2 envelope; Salesforce Outbound Messaging uses SOAP 1.1.",
        )
    if root.tag != _ENVELOPE_TAG:
        raise SoapFaultError(
            "not_soap_envelope",
            f"The document element is {etree.QName(root).localname!r}, not a SOAP 1.1 Envelope.",
        )
    body = _first_child(root, _BODY_TAG)
    if body is None:
        raise SoapFaultError("not_soap_envelope", "The SOAP envelope has no Body.")
    payload = next(_child_elements(body), None)
    if payload is None or payload.tag != _NOTIFICATIONS_TAG:
        found = "nothing" if payload is None else repr(etree.QName(payload).text)
        raise SoapFaultError(
            "no_notifications",
            f"The SOAP Body holds {found}, {NOT_NOTIFICATIONS} in {OUTBOUND_NS}.",
        )
    return payload


def _is_nil(element: etree._Element) -> bool:
    nil = element.get(_XSI_NIL)
    return nil is not None and nil.strip() in ("true", "1")


def _text(element: etree._Element) -> str:
    return element.text or ""


def _fields(element: etree._Element, where: str,
            path: tuple[str, ...] = ()) -> dict[str, FieldValue]:
    """The child elements of ``element`` (the field ``path`` of the sObject ``where``
    names) as fields; a name may appear once. A nil field is None, one without child
    elements its text, one with them its fields. One loop, each tag read once: this runs
    for every field of up to 100 notifications, and lxml builds a tag anew on every read.
    Where a field is is written out only for an error: each level of nesting writing
    out its own would hold memory quadratic in the depth."""
    fields: dict[str, FieldValue] = {}
    for child in element:
        tag = child.tag
        if type(tag) is not str:
            _refuse_an_entity(child)
            continue
        name = tag[tag.find("}") + 1:]
        if name in fields:
            place = f"{where}, field {'.'.join(path)}" if path else where
            raise SoapFaultError("invalid_field", f"{place}: field {name!r} appears twice.")
        # values() first: most fields carry no attribute, and it costs a third of a get()
        if child.values() and _is_nil(child):
            fields[name] = None
        elif len(child):
            fields[name] = _fields(child, where, (*path, name)) or _text(child)
        else:
            fields[name] = _text(child)
    return fields


def _required_id(element: etree._Element | None, name: str, where: str) -> str:
    """The ID in ``element`` (the first ``name`` child of its parent, None: there is none)."""
    if element is None or _is_nil(element):
        raise SoapFaultError("missing_element", f"{where}: the {name} element is missing.")
    value = _text(element).strip()
    if len(value) not in _ID_LENGTHS or not (value.isascii() and value.isalnum()):
        raise SoapFaultError(
            "invalid_id",
            f"{where}: {name} {value[:40]!r} is not a Salesforce ID "
            "(15 or 18 letters and digits).",
        )
    return value


def _optional_text(element: etree._Element | None) -> str | None:
    if element is None or _is_nil(element):
        return None
    return _text(element).strip()


def _resolve_xsi_type(sobject: etree._Element, where: str) -> tuple[str | None, str | None]:
    """Return (namespace, local name) of ``xsi:type``, resolving the prefix by namespace."""
    raw = sobject.get(_XSI_TYPE)
    if raw is None:
        return None, None
    prefix, sep, local = raw.strip().rpartition(":")
    namespace = sobject.nsmap.get(prefix if sep else None)
    if sep and namespace is None:
        raise SoapFaultError(
            "invalid_sobject_type",
            f"{where}: xsi:type {raw!r} uses the prefix {prefix!r}, which is not declared.",
        )
    if not local:
        raise SoapFaultError("invalid_sobject_type", f"{where}: xsi:type {raw!r} names no type.")
    return namespace, local


_ID_TAG = _tag("Id")
_SOBJECT_TAG = _tag("sObject")
_ORGANIZATION_ID_TAG = _tag("OrganizationId")
_ACTION_ID_TAG = _tag("ActionId")
_SESSION_ID_TAG = _tag("SessionId")
_ENTERPRISE_URL_TAG = _tag("EnterpriseUrl")
_PARTNER_URL_TAG = _tag("PartnerUrl")


def _notification(element: etree._Element, index: int) -> Notification:
    first = _first_children(element)
    where = f"Notification {index}"
    notification_id = _required_id(first.get(_ID_TAG), "Id", where)
    where = f"Notification {index} (Id {notification_id})"
    sobject = first.get(_SOBJECT_TAG)
    if sobject is None:
        raise SoapFaultError("missing_element", f"{where}: the sObject element is missing.")
    namespace, sobject_type = _resolve_xsi_type(sobject, where)
    return Notification(notification_id, sobject_type, namespace,
                        _fields(sobject, where))


# Namespaces in scope at the notifications element (Salesforce declares four): every
# sObject's xsi:type is resolved among them and its own, so their number multiplies.
MAX_NAMESPACES = 64


def _check_namespaces(payload: etree._Element) -> None:
    declared = len(payload.nsmap)
    if declared > MAX_NAMESPACES:
        raise SoapFaultError(
            "malformed_xml", f"The envelope declares {declared} XML namespaces around the "
            f"notifications; omgate reads messages with at most {MAX_NAMESPACES}.")


def _notification_elements(payload: etree._Element) -> list[etree._Element]:
    elements = []
    for element in payload.iterchildren(f"{{{OUTBOUND_NS}}}Notification"):
        elements.append(element)
        if len(elements) > MAX_NOTIFICATIONS:
            raise SoapFaultError(
                "too_many_notifications",
                f"The message holds more than {MAX_NOTIFICATIONS} notifications, "
                "the most Salesforce sends in one message.",
            )
    if not elements:
        raise SoapFaultError(
            "no_notification", "The notifications element holds no Notification."
        )
    return elements


def _short_id_warnings(
    organization_id: str, action_id: str, notifications: tuple[Notification, ...],
    schema: NotificationSchema | None,
) -> tuple[ParseWarning, ...]:
    places: dict[str, int] = {}

    def count(place: str, value: object) -> None:
        if isinstance(value, str) and len(value) == 15:
            places[place] = places.get(place, 0) + 1

    count("OrganizationId", organization_id)
    count("ActionId", action_id)
    for notification in notifications:
        count("Notification Id", notification.id)
        count("sObject Id", notification.record_id)
        for spec in schema.id_fields if schema else ():
            if spec.name != "Id":
                count(f"field {spec.name}", notification.fields.get(spec.name))
    return tuple(
        ParseWarning(
            "short_id",
            place,
            f"{place}: {number} 15-character ID(s); 18-character IDs are the case-safe form.",
        )
        for place, number in places.items()
    )


def acknowledges(body: bytes) -> bool:
    """Whether an answer's body is the acknowledgement Salesforce waits for: a SOAP 1.1
    envelope whose Body holds the outbound namespace's notificationsResponse with Ack
    true. The text ``<Ack>true</Ack>`` anywhere else (no envelope, an HTML page) is none:
    Salesforce retries such a message for 24 hours."""
    try:
        root = _parse_xml(body)
    except SoapFaultError:
        return False
    if root.tag != _ENVELOPE_TAG:
        return False
    ack = root.find(f"{{{SOAP_ENV_NS}}}Body/{{{OUTBOUND_NS}}}notificationsResponse"
                    f"/{{{OUTBOUND_NS}}}Ack")
    return ack is not None and (ack.text or "").strip(" \t\r\n") in ("true", "1")


def parse_message(body: bytes, schema: NotificationSchema | None = None) -> OutboundMessage:
    """Parse a request body into an :class:`OutboundMessage` or raise :class:`SoapFaultError`."""
    payload = _notifications_element(_parse_xml(body))
    _check_namespaces(payload)
    notification_elements = _notification_elements(payload)
    first = _first_children(payload)
    organization_id = _required_id(first.get(_ORGANIZATION_ID_TAG), "OrganizationId",
                                   "notifications")
    action_id = _required_id(first.get(_ACTION_ID_TAG), "ActionId", "notifications")
    session_text = _optional_text(first.get(_SESSION_ID_TAG))
    notifications = tuple(
        _notification(element, index)
        for index, element in enumerate(notification_elements, start=1)
    )
    if schema is not None:
        notifications = tuple(
            type_notification(notification, schema, index)
            for index, notification in enumerate(notifications, start=1)
        )
    return OutboundMessage(
        organization_id=organization_id,
        action_id=action_id,
        session_id=Secret(session_text) if session_text else None,
        enterprise_url=_optional_text(first.get(_ENTERPRISE_URL_TAG)),
        partner_url=_optional_text(first.get(_PARTNER_URL_TAG)),
        notifications=notifications,
        warnings=_short_id_warnings(organization_id, action_id, notifications, schema),
    )
