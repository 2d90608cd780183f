"""Who may use the console: a bearer token or an HTTP basic password, and CSRF tokens.

The token comes from ``admin.token_file`` or ``$OMGATE_ADMIN_TOKEN``; on a loopback
address the console may run without one, anywhere else omgate refuses to start. Every
action is a POST whose form carries the value of a SameSite=Strict cookie (double
submit), so another site cannot make a logged-in browser act.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from service.config import BindAddress, Config, ConfigError

TOKEN_VARIABLE = "OMGATE_ADMIN_TOKEN"  # noqa: S105 - the variable's name, not a token
CSRF_COOKIE = "omgate_csrf"
CSRF_FIELD = "csrf"
MIN_TOKEN_LENGTH = 16


def is_loopback_host(host_header: str) -> bool:
    """Whether an HTTP Host header names this machine's loopback (``localhost``,
    ``127.0.0.1``, ``[::1]``, with or without a port): what a browser sends to a console
    bound there, and not what it sends to a name an attacker re-pointed at it (DNS
    rebinding)."""
    host = host_header.strip().lower()
    if host.startswith("["):
        host = host[1:host.find("]")] if "]" in host else host
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_loopback(address: BindAddress) -> bool:
    if address.host == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.host).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return False


def _read_token(path: Path, source: str) -> str:
    try:
        token = path.read_text().strip()
    except OSError as error:
        raise ConfigError(f"{source}: [admin] token_file: cannot read {path}: "
                          f"{error.strerror}") from None
    if len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(f"{source}: [admin] token_file: {path} holds fewer than "
                          f"{MIN_TOKEN_LENGTH} characters")
    return token


def console_token(config: Config) -> str | None:
    """The token the console asks for (None: none, allowed on loopback only)."""
    address = config.server.admin_bind
    token = os.environ.get(TOKEN_VARIABLE, "").strip() or None
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(f"${TOKEN_VARIABLE} holds fewer than {MIN_TOKEN_LENGTH} characters")
    if token is None and config.admin.token_file is not None:
        token = _read_token(config.admin.token_file, config.origin("admin", "token_file"))
    if address is not None and token is None and not is_loopback(address):
        raise config.error("server", "admin_bind",
                           f"{address} is not a loopback address: set [admin] token_file (or "
                           "$OMGATE_ADMIN_TOKEN) so the console asks for a token")
    return token


def presented_token(authorization: str) -> str | None:
    """The token in ``Authorization: Bearer ...`` or as an HTTP basic password."""
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2]
    return None


def token_matches(expected: str, authorization: str) -> bool:
    presented = presented_token(authorization)
    return presented is not None and hmac.compare_digest(presented.encode(), expected.encode())


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def csrf_matches(cookie: str | None, field: str | None) -> bool:
    # as bytes: compare_digest raises TypeError on text that is not ASCII
    return bool(cookie) and bool(field) and hmac.compare_digest(
        str(cookie).encode(errors="surrogatepass"), str(field).encode(errors="surrogatepass"))


def from_own_pages(headers: Mapping[str, str]) -> bool:
    """Whether a browser says the request comes from the console's own pages (a client
    that sends neither header is judged by its CSRF token alone). The CSRF cookie alone
    does not say it: cookies are not kept apart by port, so a page another local server
    serves can set it. The origin's host and port must be the request's; its scheme may
    differ (a TLS proxy in front of the console). Under the console's ``no-referrer``
    policy a browser sends ``Origin: null`` even from the console's own pages: then
    ``Sec-Fetch-Site``, which every current browser sends, is what tells."""
    site = headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = headers.get("origin")
    if origin is None or origin == "null":
        return True
    host = headers.get("host", "").lower()
    return bool(host) and urlsplit(origin).netloc.lower() == host
