"""Where notifications go: a webhook (one JSON document per notification) or a callable."""

from __future__ import annotations

import asyncio
import http.client
import importlib
import inspect
import json
import ssl
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from service.inbox import StoredNotification

Target = Callable[[StoredNotification, int], Awaitable[None]]
MAX_ANSWER_BYTES = 64 * 1024


class DeliveryFailed(Exception):
    """The target did not take the notification; the message says what it answered."""


def _post(url: str, body: bytes, headers: dict[str, str], timeout: float,
          context: ssl.SSLContext) -> tuple[int, bytes]:
    parts = urlsplit(url)
    connection: http.client.HTTPConnection
    if parts.scheme == "https":
        connection = http.client.HTTPSConnection(parts.hostname or "", parts.port,
                                                 timeout=timeout, context=context)
    else:
        connection = http.client.HTTPConnection(parts.hostname or "", parts.port,
                                                timeout=timeout)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    try:
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read(MAX_ANSWER_BYTES)
    finally:
        connection.close()


def webhook(url: str, timeout: float) -> Target:
    """POST the notification as JSON; any 2xx answer is success."""
    context = ssl.create_default_context()

    async def deliver(notification: StoredNotification, attempt: int) -> None:
        body = json.dumps(notification.delivery_document(), ensure_ascii=False).encode()
        headers = {
            "Content-Type": "application/json",
            # at least once: the receiver can drop repeats by this key
            "Idempotency-Key": f"{notification.organization_id[:15]}:"
                               f"{notification.notification_id[:15]}",
            "X-Omgate-Attempt": str(attempt),
        }
        try:
            status, answer = await asyncio.to_thread(_post, url, body, headers, timeout, context)
        except (OSError, http.client.HTTPException) as error:
            raise DeliveryFailed(f"{type(error).__name__}: {error}") from None
        if not 200 <= status < 300:
            raise DeliveryFailed(f"HTTP {status}: {answer[:200]!r}")

    return deliver


def handler(reference: str) -> Target:
    """Call ``module:function`` with the notification's JSON document (async or not)."""
    module_name, _, function_name = reference.partition(":")
    try:
        function: Callable[[dict[str, Any]], Any] = getattr(
            importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"cannot load the delivery handler {reference!r}: {error}") from None

    async def deliver(notification: StoredNotification, _attempt: int) -> None:
        document = notification.delivery_document()
        if inspect.iscoroutinefunction(function):
            await function(document)
        else:
            await asyncio.to_thread(function, document)

    return deliver
