"""Proxies in front of omgate: PROXY protocol, forwarded addresses and certificates."""

from service.forwarded.addresses import (
    CLIENT_ADDRESS_HEADERS,
    Address,
    ClientAddressHeader,
    ClientKey,
    Network,
    client_key,
    format_address,
    parse_address,
    within,
)
from service.forwarded.certificates import ForwardedCertError, ForwardedFormat, forwarded_format
from service.forwarded.origin import ForwardingSettings, RequestOrigin, resolve
from service.forwarded.proxy_protocol import NEED_MORE, ProxyHeader, ProxyProtocolError, parse

__all__ = [
    "CLIENT_ADDRESS_HEADERS",
    "NEED_MORE",
    "Address",
    "ClientAddressHeader",
    "ClientKey",
    "ForwardedCertError",
    "ForwardedFormat",
    "ForwardingSettings",
    "Network",
    "ProxyHeader",
    "ProxyProtocolError",
    "RequestOrigin",
    "client_key",
    "format_address",
    "forwarded_format",
    "parse",
    "parse_address",
    "resolve",
    "within",
]
