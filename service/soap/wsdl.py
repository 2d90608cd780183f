"""Type notification fields from the WSDL an operator exported from Salesforce.

zeep reads the WSDL once, at start, with DTDs, entities and network access
off. What it learns is kept as plain :class:`FieldSpec` values, so typing a
message later is a dictionary lookup and a conversion per field.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
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


def _boolean(text: str) -> bool:
    value = text.strip()
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise ValueError("not a boolean (true, false, 1 or 0)")


def _decimal(text: str) -> Decimal:
    try:
        return Decimal(text.strip())
    except InvalidOperation:
        raise ValueError("not a decimal number") from None


def _converter(zeep_type: Any) -> Converter:
    """Pick a strict conversion for a zeep simple type (restrictions inherit their base's)."""
    from zeep.xsd.types import builtins as xsd

    strict: list[tuple[type, Converter]] = [
        (xsd.Boolean, _boolean),
        (xsd.Decimal, _decimal),  # before Integer: zeep's Integer derives from Decimal
    ]
    for base, convert in strict:
        if isinstance(zeep_type, base) and not isinstance(zeep_type, xsd.Integer):
            return convert
    if isinstance(zeep_type, xsd.String | xsd.AnyURI | xsd.Base64Binary | xsd.HexBinary):
        return str

    def via_zeep(text: str) -> FieldValue:
        value = zeep_type.pythonvalue(text.strip())
        if not isinstance(value, str | int | float | Decimal | dt.date | dt.time):
            raise ValueError("not a value of this type")
        return value

    return via_zeep


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
