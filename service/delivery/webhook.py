"""The webhook: one JSON ``POST`` per notification, over pooled HTTP/1.1 connections (httpx).

Connections are reused between notifications. An attempt cut off by the worker's timeout
is cancelled, and httpx closes a connection whose exchange did not finish, so nothing of
that attempt can still reach the receiver after its retry, or after the record's next
notification.
"""

from __future__ import annotations

import json
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import httpx

from service.delivery.targets import DeliveryFailed
from service.inbox import StoredNotification

MAX_ANSWER_BYTES = 64 * 1024
ANSWER_SHOWN_BYTES = 200
# What omgate writes itself; webhook_headers may not replace it.
OWN_HEADERS = frozenset({"content-type", "content-length", "transfer-encoding", "host",
                         "connection", "idempotency-key", "x-omgate-attempt"})


@dataclass(frozen=True)
class WebhookTls:
    """What the webhook trusts and presents: ``ca`` replaces the system's trust store."""

    ca: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None  # None: the key is in client_cert's file

    @property
    def configured(self) -> bool:
        return self.ca is not None or self.client_cert is not None

    def context(self) -> ssl.SSLContext:
        """The client context; ValueError names the key whose file cannot be used."""
        try:
            context = ssl.create_default_context(
                cafile=str(self.ca) if self.ca is not None else None)
        except (OSError, ssl.SSLError) as error:
            raise ValueError(f"webhook_ca: cannot use {self.ca}: {error}") from None
        if self.client_cert is not None:
            try:
                context.load_cert_chain(self.client_cert, self.client_key,
                                        password=_no_passphrase)
            except (OSError, ssl.SSLError, ValueError) as error:
                raise ValueError(f"webhook_client_cert: cannot use {self.client_cert} with "
                                 f"{self.client_key or 'the key in it'}: {error}") from None
        return context


def _no_passphrase() -> str:
    raise ValueError("the key is encrypted; give omgate an unencrypted key file")


@dataclass(frozen=True)
class WebhookOptions:
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)  # may hold tokens
    tls: WebhookTls = WebhookTls()
    max_connections: int = 4
    timeout: float = 10.0


@dataclass(frozen=True)
class WebhookUrl:
    """The URL without its user information, which becomes HTTP Basic credentials."""

    url: str
    credentials: tuple[str, str] | None = field(repr=False)

    @classmethod
    def parse(cls, url: str) -> WebhookUrl:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        userinfo, _, host = parts.netloc.rpartition("@")
        bare = urlunsplit(parts._replace(netloc=host))
        if not userinfo:
            return cls(bare, None)
        user, _, password = userinfo.partition(":")
        return cls(bare, (unquote(user), unquote(password)))


class Webhook:
    """POSTs a notification's JSON document; any 2xx answer is success."""

    def __init__(self, url: str, options: WebhookOptions = WebhookOptions()) -> None:
        target = WebhookUrl.parse(url)
        if options.tls.configured and not target.url.startswith("https:"):
            raise ValueError("webhook_ca and webhook_client_cert need an https:// webhook_url")
        taken = [name for name, _ in options.headers if name.lower() in OWN_HEADERS]
        if taken:
            raise ValueError(f"webhook_headers {taken[0]}: omgate sets this header itself")
        if target.credentials and any(name.lower() == "authorization"
                                      for name, _ in options.headers):
            raise ValueError("webhook_headers Authorization: the user:password@ in "
                             "webhook_url sets it already")
        self._url = target.url
        self._client = httpx.AsyncClient(
            auth=httpx.BasicAuth(*target.credentials) if target.credentials else None,
            headers=dict(options.headers),
            verify=options.tls.context(),
            limits=httpx.Limits(max_connections=options.max_connections,
                                max_keepalive_connections=options.max_connections),
            timeout=options.timeout,
            follow_redirects=False,
            trust_env=False,  # no proxy, .netrc or CA bundle from the environment
        )

    async def __call__(self, notification: StoredNotification, attempt: int) -> None:
        # allow_nan=False: NaN and Infinity are no JSON (RFC 8259), and a strict receiver
        # would refuse every attempt; such a value fails here, saying why
        body = json.dumps(notification.delivery_document(), ensure_ascii=False,
                          allow_nan=False).encode()
        headers = {
            "Content-Type": "application/json",
            # at least once: the receiver can drop repeats by this key
            "Idempotency-Key": f"{notification.organization_id[:15]}:"
                               f"{notification.notification_id[:15]}",
            "X-Omgate-Attempt": str(attempt),
        }
        try:
            async with self._client.stream("POST", self._url, content=body,
                                           headers=headers) as response:
                answer = await _answer_start(response)
        except httpx.TimeoutException:
            raise DeliveryFailed("timed out") from None
        except httpx.InvalidURL:  # its words quote the URL, which may hold a password
            raise DeliveryFailed("the webhook URL cannot be read (see delivery.webhook_url)") \
                from None
        except (httpx.HTTPError, ssl.SSLError, OSError) as error:
            raise DeliveryFailed(f"{type(error).__name__}: {error}") from None
        if not 200 <= response.status_code < 300:
            raise DeliveryFailed(f"HTTP {response.status_code}: "
                                 f"{answer[:ANSWER_SHOWN_BYTES]!r}")

    async def aclose(self) -> None:
        await self._client.aclose()


async def _answer_start(response: httpx.Response) -> bytes:
    """The answer's first MAX_ANSWER_BYTES. A longer answer is not read to its end, so
    its connection is closed rather than reused."""
    kept = bytearray()
    async for chunk in response.aiter_raw():
        kept += chunk[: MAX_ANSWER_BYTES - len(kept)]
        if len(kept) >= MAX_ANSWER_BYTES:
            break
    return bytes(kept)

