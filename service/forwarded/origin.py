"""Where a connection and a request really come from, and what a trusted proxy says about
the client's certificate: :class:`ConnectionOrigin` (the TCP peer, or the client a PROXY
header names) and :class:`RequestOrigin` (after the forwarding headers).

``resolve`` is pure: headers, the TCP peer and (from the PROXY protocol) the client the
proxy saw go in; the real client address, the forwarded chain (when a trusted proxy
sent one in the configured format) and the forwarded headers to drop come out.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from service.clientauth.presented import (
    CHAIN_KEPT_BYTES,
    CHAINS_KEPT,
    PresentedChain,
    unreadable_chain,
)
from service.forwarded.addresses import (
    Address,
    ClientAddressHeader,
    Network,
    client_address,
    format_address,
    within,
)
from service.forwarded.certificates import (
    KNOWN_CERT_HEADERS,
    MAX_HEADER_BYTES,
    ForwardedCertError,
    ForwardedFormat,
)

ADDRESS_HEADERS = frozenset({"forwarded", "x-forwarded-for", "x-real-ip"})
# Header text is PEM or base64, possibly URL-escaped: about twice its DER.
FORWARDED_KEPT_BYTES = 2 * CHAIN_KEPT_BYTES


@dataclass(frozen=True)
class ForwardingSettings:
    trusted_proxies: tuple[Network, ...]
    certificate_format: ForwardedFormat | None
    client_address_header: ClientAddressHeader = "x-forwarded-for"

    @functools.cached_property
    def header_names(self) -> frozenset[str]:
        """Every header a proxy forwards client facts in; dropped from untrusted peers."""
        configured = self.certificate_format.headers if self.certificate_format else ()
        return KNOWN_CERT_HEADERS | ADDRESS_HEADERS | frozenset(configured)


@dataclass(frozen=True)
class ConnectionOrigin:
    """The TCP peer and, when a trusted proxy relays the connection with a PROXY header,
    the client it names (None when it names none: UNKNOWN, UNSPEC)."""

    peer: tuple[str, int] | None
    client: tuple[str, int] | None = None
    proxied: bool = False

    def label(self) -> str | None:
        return format_address(self.client or self.peer)


@dataclass(frozen=True)
class RequestOrigin:
    peer: Address | None  # the TCP peer: a client, or a proxy
    client: Address | None  # the real client, as far as trusted proxies tell
    from_trusted_proxy: bool = False  # a trusted proxy relayed it (and named the client)
    ignored_headers: tuple[str, ...] = ()  # forwarded headers an untrusted peer sent
    # What a trusted proxy forwarded in the configured certificate header (None: nothing);
    # a header that cannot be read is one unreadable certificate, judged by the policy.
    forwarded_chain: PresentedChain | None = None
    forwarded_format: str | None = None  # the format the trusted proxy's headers were read in
    # the trusted proxy whose headers were believed: the TCP peer, or the client a PROXY
    # header named (a load balancer relaying the proxy)
    proxy: Address | None = None


def resolve(headers: Mapping[str, str], peer: Address | None, proxied_client: Address | None,
            settings: ForwardingSettings, *, relayed: bool = False,
            repeated: frozenset[str] = frozenset()) -> RequestOrigin:
    """``headers`` has lower-case names, the lines of a repeated one (named in
    ``repeated``) joined by commas; ``relayed`` says a PROXY header came first, and
    ``proxied_client`` is the client it names (None: UNKNOWN or UNSPEC).

    After a PROXY header the bytes, headers included, come from the client the proxy
    relays, not from the proxy: they are believed only if that client is a trusted proxy
    (never when the header names none).
    """
    sender = proxied_client if relayed or proxied_client is not None else peer
    if not within(sender, settings.trusted_proxies):
        return untrusted_origin(peer, sender, headers, settings)
    header = settings.client_address_header
    client = client_address(sender, settings.trusted_proxies, header, headers.get(header))
    if settings.certificate_format is None:
        return RequestOrigin(peer, client, from_trusted_proxy=True, proxy=sender)
    return RequestOrigin(peer, client, from_trusted_proxy=True,
                         forwarded_chain=forwarded(headers, settings.certificate_format,
                                                   repeated),
                         forwarded_format=settings.certificate_format.name, proxy=sender)


def untrusted_origin(peer: Address | None, sender: Address | None, names: Iterable[str],
                     settings: ForwardingSettings) -> RequestOrigin:
    """A request from ``sender``, no trusted proxy (``names``: its headers' lower-case
    names): what it forwarded is ignored."""
    header_names = settings.header_names
    ignored = tuple(sorted({name for name in names if name in header_names}))
    return RequestOrigin(peer, sender, ignored_headers=ignored)


def forwarded(headers: Mapping[str, str], certificate_format: ForwardedFormat,
              repeated: frozenset[str] = frozenset()) -> PresentedChain | None:
    """The chain in the format's headers; None when they are absent or empty. A proxy
    forwards its sender's certificate on every request: the same values are read once
    (up to FORWARDED_KEPT_BYTES of them, like the chains load_chain keeps).

    A header that is not a list, sent more than once, is an unreadable chain: a proxy
    that adds its own line after the client's, instead of replacing it, would otherwise
    let the client choose the leaf."""
    sent = tuple((name, headers[name]) for name in certificate_format.headers
                 if name in headers)
    twice = sorted(name for name, _value in sent
                   if name in repeated and name not in certificate_format.lists)
    if twice:
        return unreadable_chain(
            headers[twice[0]].encode("latin-1", errors="replace")[:MAX_HEADER_BYTES],
            f"the {twice[0]} header came more than once: a proxy must replace the one a "
            "client sent, not add its own after it")
    if sum(len(value) for _name, value in sent) > FORWARDED_KEPT_BYTES:
        return _read_forwarded(sent, certificate_format)
    return _kept_forwarded(sent, certificate_format)


def _read_forwarded(sent: tuple[tuple[str, str], ...], certificate_format: ForwardedFormat
                    ) -> PresentedChain | None:
    headers = dict(sent)
    try:
        chain = certificate_format.parse(headers)
    except ForwardedCertError as error:
        text = "\n".join(headers.get(name, "") for name in certificate_format.headers)
        return unreadable_chain(text.encode("latin-1", errors="replace")[:MAX_HEADER_BYTES],
                                f"the {certificate_format.name} header cannot be read: {error}")
    return PresentedChain(chain) if chain else None


_kept_forwarded = functools.lru_cache(maxsize=CHAINS_KEPT)(_read_forwarded)
