"""Inbox and webhook URLs as they may be shown: in logs, error messages and HTTP answers.

An http(s) URL (the webhook) can carry a password in its user information
(``https://user:secret@host/hook``); without a password, the user name alone may be a
token, so it is hidden instead. A PostgreSQL connection string can carry a password in
three places: the URL's user information (``postgresql://user:secret@host/db``), a
``password=`` query parameter, and the keyword form (``host=h password=secret dbname=d``).
libpq's own parser (through psycopg's conninfo) finds it in each, so what it reads as the
password is what is hidden.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

MASK = "***"
# sslpassword unlocks the client key; the SCRAM keys and the OAuth client secret (libpq
# 18) log in as a password does
SECRET_KEYWORDS = ("password", "sslpassword", "oauth_client_secret", "scram_client_key",
                   "scram_server_key")
UNREADABLE = "<not shown: not a connection string libpq can read>"


@dataclass(frozen=True)
class MaskedDsn:
    """``shown`` is the connection string with its secrets replaced by ``***``."""

    shown: str
    readable: bool  # False: libpq cannot parse it (so it cannot be used either)
    original: str = field(repr=False)
    secrets: tuple[str, ...] = field(repr=False)

    def __str__(self) -> str:
        return self.shown

    def scrub(self, text: str) -> str:
        """``text`` (an error message, say) with the string and its secrets masked."""
        if self.original:
            text = text.replace(self.original, self.shown)
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        return text


def _could_hold_a_secret(dsn: str) -> bool:
    # Where libpq takes a password from: the user information (before "@") or a
    # keyword=value pair, in the keyword form or a URL's query.
    return "@" in dsn or "=" in dsn


@functools.cache
def secret_keywords() -> frozenset[str]:
    """SECRET_KEYWORDS and whatever else the libpq in use marks as a password to hide."""
    from psycopg import pq

    hidden = {option.keyword.decode() for option in pq.Conninfo.get_defaults()
              if option.dispchar == b"*"}
    return frozenset(SECRET_KEYWORDS) | hidden


def _conninfo(dsn: str) -> dict[str, str] | None:
    """libpq's reading of ``dsn``, or None when it cannot read it."""
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    if "\0" in dsn:  # libpq would stop reading there and silently drop the rest
        return None
    try:
        return {name: str(value) for name, value in conninfo_to_dict(dsn).items()}
    except (ProgrammingError, UnicodeError):
        return None


def reads_two_ways(url: str) -> bool:
    """True when an http(s) URL could mean two things: it does not parse, its port is not
    a number, or an "@" comes after its host. A user name or password holding "/", "?" or
    "#" unencoded ends the host there and puts the rest of it, "@" included, in the path."""
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises for a port that is not a number
    except ValueError:  # an unclosed "[" of an IPv6 address, say
        return True
    return "@" in url.partition("//")[2][len(parts.netloc):]


def _mask_http_url(url: str) -> MaskedDsn:
    if reads_two_ways(url):
        return MaskedDsn(UNREADABLE if _could_hold_a_secret(url) else url, False, url, ())
    parts = urlsplit(url)
    userinfo, at, host = parts.netloc.rpartition("@")
    if not at:
        return MaskedDsn(url, True, url, ())
    user, colon, password = userinfo.partition(":")
    secret, shown_userinfo = (password, f"{user}:{MASK}") if colon else (user, MASK)
    shown = urlunsplit(parts._replace(netloc=f"{shown_userinfo}@{host}"))
    return MaskedDsn(shown, True, url, (secret,) if secret else ())


def mask_dsn(dsn: str) -> MaskedDsn:
    """The one way an inbox URL, PostgreSQL connection string or webhook URL is shown.

    What libpq cannot read is shown only when it could not hold a password, and never
    with libpq's parse error (which quotes the string).
    """
    if dsn.startswith("sqlite:///"):
        return MaskedDsn(dsn, True, dsn, ())
    if dsn.lower().startswith(("http://", "https://")):
        return _mask_http_url(dsn)
    from psycopg.conninfo import make_conninfo

    parts = _conninfo(dsn)
    if parts is None:
        return MaskedDsn(UNREADABLE if _could_hold_a_secret(dsn) else dsn, False, dsn, ())
    secrets = {name: parts[name] for name in secret_keywords() if parts.get(name)}
    shown = make_conninfo(**{**parts, **dict.fromkeys(secrets, MASK)})
    longest_first = sorted(set(secrets.values()), key=len, reverse=True)
    return MaskedDsn(shown, True, dsn, tuple(longest_first))
