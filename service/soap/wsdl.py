"""Type notification fields from the WSDL an operator exported from Salesforce.

zeep reads the WSDL once, at start, with DTDs, entities and network access
off. What it learns is kept as plain :class:`FieldSpec` values, so typing a
message later is a dictionary lookup and a conversion per field.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from types import MappingProxyType
from typing import Any

from service.soap.model import OUTBOUND_NS, FieldValue, Notification, SoapFaultError

Converter = Callable[[str], FieldValue]


class WsdlError(Exception):
    """The WSDL cannot be used; the message names the file and the reason."""


@dataclass(frozen=True)
class FieldSpec:
    name: str
    type_name: str
    convert: Converter
    nillable: bool
    required: bool
    repeated: bool


@dataclass(frozen=True)
class NotificationSchema:
    source: Path
    sobject_namespace: str
    sobject_type: str
    fields: Mapping[str, FieldSpec]

    @property
    def id_fields(self) -> tuple[FieldSpec, ...]:
        """Fields typed as Salesforce IDs (the WSDL's ``ent:ID``)."""
        return tuple(spec for spec in self.fields.values() if spec.type_name == "ID")


# xsd's lexical spaces (XML Schema 1.0 part 2, section 3.2): what a value may look like
# before it is converted. Python's int(), float() and Decimal(), isodate and zeep take
# more (underscores, other scripts' digits, NaN, week dates, a date's prefix) and stored
# something other than what was sent. Only XML's whitespace is collapsed.
_XML_SPACE = " \t\r\n"
_TIMEZONE = r"(Z|[+-]((0[0-9]|1[0-3]):[0-5][0-9]|14:00))?"
_DATE = r"-?[0-9]{4,}-[0-9]{2}-[0-9]{2}"
_CLOCK = r"[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
_INTEGER = re.compile(r"[+-]?[0-9]+")
_DECIMAL = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)")
_FLOATING = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([Ee][+-]?[0-9]+)?|-?INF|NaN")


def _lexical(pattern: str | re.Pattern[str], text: str, what: str) -> str:
    value = text.strip(_XML_SPACE)
    if not re.fullmatch(pattern, value):
        raise ValueError(f"not {what}")
    return value


def _boolean(text: str) -> bool:
    value = text.strip(_XML_SPACE)
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise ValueError("not a boolean (true, false, 1 or 0)")


def _decimal(text: str) -> Decimal:
    try:
        return Decimal(_lexical(_DECIMAL, text, "a decimal number"))
    except InvalidOperation:
        raise ValueError("not a decimal number") from None


def _floating(text: str) -> float:
    value = float(_lexical(_FLOATING, text, "a floating-point number"))
    if not math.isfinite(value):  # xsd has them, Salesforce sends none, and JSON has none
        raise ValueError("not a finite number")
    return value


def _integer(low: int | None, high: int | None) -> Converter:
    def convert(text: str) -> int:
        value = int(_lexical(_INTEGER, text, "a whole number"))
        if (low is not None and value < low) or (high is not None and value > high):
            raise ValueError("outside the type's range")
        return value

    return convert


def _moment(zeep_type: Any, pattern: str, what: str) -> Converter:
    via_zeep = _via_zeep(zeep_type)

    def convert(text: str) -> FieldValue:
        value = via_zeep(_lexical(pattern, text, what))
        if isinstance(value, dt.datetime | dt.time):
            value.utcoffset()  # an offset Python cannot hold raises here, not when stored
        return value

    return convert


def _via_zeep(zeep_type: Any) -> Converter:
    def via_zeep(text: str) -> FieldValue:
        value = zeep_type.pythonvalue(text.strip(_XML_SPACE))
        if not isinstance(value, str | int | float | Decimal | dt.date | dt.time):
            raise ValueError("not a value of this type")
        return value

    return via_zeep


def _integer_ranges() -> list[tuple[type, int | None, int | None]]:
    """zeep's integer types, the narrower before the types they restrict."""
    from zeep.xsd.types import builtins as xsd

    return [
        (xsd.Byte, -2**7, 2**7 - 1), (xsd.Short, -2**15, 2**15 - 1),
        (xsd.Int, -2**31, 2**31 - 1), (xsd.Long, -2**63, 2**63 - 1),
        (xsd.UnsignedByte, 0, 2**8 - 1), (xsd.UnsignedShort, 0, 2**16 - 1),
        (xsd.UnsignedInt, 0, 2**32 - 1), (xsd.UnsignedLong, 0, 2**64 - 1),
        (xsd.PositiveInteger, 1, None), (xsd.NonNegativeInteger, 0, None),
        (xsd.NegativeInteger, None, -1), (xsd.NonPositiveInteger, None, 0),
        (xsd.Integer, None, None),
    ]


def _converter(zeep_type: Any) -> Converter:
    """Pick a strict conversion for a zeep simple type (restrictions inherit their base's)."""
    from zeep.xsd.types import builtins as xsd

    for base, low, high in _integer_ranges():  # before Decimal: zeep's Integer derives from it
        if isinstance(zeep_type, base):
            return _integer(low, high)
    if isinstance(zeep_type, xsd.Boolean):
        return _boolean
    if isinstance(zeep_type, xsd.Decimal):
        return _decimal
    if isinstance(zeep_type, xsd.Double | xsd.Float):
        return _floating
    moments = ((xsd.DateTime, f"{_DATE}T{_CLOCK}{_TIMEZONE}", "a dateTime (date T hh:mm:ss)"),
               (xsd.Date, _DATE + _TIMEZONE, "a date (YYYY-MM-DD)"),
               (xsd.Time, _CLOCK + _TIMEZONE, "a time (hh:mm:ss)"))
    for base, pattern, what in moments:
        if isinstance(zeep_type, base):
            return _moment(zeep_type, pattern, what)
    if isinstance(zeep_type, xsd.String | xsd.AnyURI | xsd.Base64Binary | xsd.HexBinary):
        return str
    return _via_zeep(zeep_type)


def _type_label(zeep_type: Any) -> str:
    qname = getattr(zeep_type, "qname", None)
    return str(qname.localname if qname is not None else type(zeep_type).__name__)


def _load_document(path: Path) -> Any:
    from zeep.settings import Settings
    from zeep.transports import Transport
    from zeep.wsdl import Document

    class LocalOnlyTransport(Transport):
        """Refuse every network fetch: a WSDL must be self-contained or use local files."""

        def load(self, url: str) -> bytes:
            if "://" in url and not url.startswith("file://"):
                raise WsdlError(f"{path}: refers to {url}; network access is disabled")
            data: bytes = super().load(url)
            return data

    settings = Settings(
        strict=True, forbid_dtd=True, forbid_entities=True, forbid_external=True,
        xml_huge_tree=False,
    )
    # zeep annotates transport as type[Transport], but uses (and documents) an instance.
    transport = LocalOnlyTransport(cache=None)
    return Document(str(path), transport, settings=settings)  # type: ignore[arg-type]


def _child(element_type: Any, name: str, path: Path, what: str) -> Any:
    children = dict(getattr(element_type, "elements", []))
    if name not in children:
        raise WsdlError(f"{path}: {what} has no {name!r} element; is this an outbound WSDL?")
    return children[name]


def load_wsdl(path: Path) -> NotificationSchema:
    """Read an outbound-message WSDL and describe its sObject's fields."""
    try:
        document = _load_document(path)
        notifications = document.types.get_element(f"{{{OUTBOUND_NS}}}notifications")
    except WsdlError:
        raise
    except FileNotFoundError:
        raise WsdlError(f"{path}: file not found") from None
    except Exception as error:  # noqa: BLE001 - zeep raises many types for a bad WSDL
        raise WsdlError(f"{path}: cannot read the WSDL: {error}") from None
    notification = _child(notifications.type, "Notification", path, "notifications")
    sobject = _child(notification.type, "sObject", path, "the Notification type")
    sobject_type = sobject.type
    fields: dict[str, FieldSpec] = {}
    for name, element in sobject_type.elements:
        if not hasattr(element.type, "pythonvalue") or hasattr(element.type, "elements"):
            continue  # complex or wildcard members are kept as the parser found them
        fields[name] = FieldSpec(
            name=name,
            type_name=_type_label(element.type),
            convert=_converter(element.type),
            nillable=bool(element.nillable),
            required=(element.min_occurs or 0) > 0,
            repeated=element.max_occurs == "unbounded" or (element.max_occurs or 1) > 1,
        )
    return NotificationSchema(
        source=path,
        sobject_namespace=sobject_type.qname.namespace,
        sobject_type=sobject_type.qname.localname,
        fields=MappingProxyType(fields),
    )


def _typed(spec: FieldSpec, value: FieldValue, where: str) -> FieldValue:
    if value is None:
        if not spec.nillable:
            raise SoapFaultError("wsdl_mismatch", f"{where}: the WSDL does not allow nil here.")
        return None
    if not isinstance(value, str):
        raise SoapFaultError(
            "wsdl_mismatch", f"{where}: has child elements; the WSDL says {spec.type_name}."
        )
    try:
        return spec.convert(value)
    except Exception as error:  # noqa: BLE001 - zeep and isodate raise assorted types
        raise SoapFaultError(
            "wsdl_mismatch",
            f"{where}: {value[:60]!r} is not a valid {spec.type_name} ({error}).",
        ) from None


def type_notification(
    notification: Notification, schema: NotificationSchema, index: int
) -> Notification:
    """Convert a notification's string fields to the WSDL's types, or refuse it saying where."""
    where = f"Notification {index} (Id {notification.id})"
    sent_type = (notification.sobject_namespace, notification.sobject_type)
    expected_type = (schema.sobject_namespace, schema.sobject_type)
    if notification.sobject_type is not None and sent_type != expected_type:
        raise SoapFaultError(
            "wsdl_mismatch",
            f"{where}: sObject type {{{sent_type[0]}}}{sent_type[1]} is not the WSDL's "
            f"{{{expected_type[0]}}}{expected_type[1]} ({schema.source.name}).",
        )
    typed: dict[str, FieldValue] = {}
    for name, value in notification.fields.items():
        spec = schema.fields.get(name)
        field_where = f"{where}, field {name}"
        if spec is None:
            raise SoapFaultError(
                "wsdl_mismatch",
                f"{field_where}: not a field of {schema.sobject_type} in {schema.source.name}.",
            )
        typed[name] = _typed(spec, value, field_where)
    for spec in schema.fields.values():
        if spec.required and spec.name not in typed:
            raise SoapFaultError(
                "wsdl_mismatch", f"{where}: required field {spec.name!r} is missing."
            )
    return dataclasses.replace(
        notification,
        sobject_type=schema.sobject_type,
        sobject_namespace=schema.sobject_namespace,
        fields=typed,
    )
