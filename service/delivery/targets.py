"""Where notifications go: a webhook (one JSON document per notification) or a callable.

A target is awaited under the worker's per-attempt timeout and must stop when cancelled,
or a late first attempt could land after a retry and after the record's next
notification. The webhook is plain asyncio, so cancelling it closes the connection; a
synchronous handler runs in a thread that cannot be stopped, so the record's next call
waits until the previous one has returned.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import importlib
import inspect
import json
import re
import ssl
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from service.inbox import StoredNotification

Target = Callable[[StoredNotification, int], Awaitable[None]]
MAX_ANSWER_BYTES = 64 * 1024
MAX_HEADER_LINES = 100
CLOSE_SECONDS = 1.0


class DeliveryFailed(Exception):
    """The target did not take the notification; the message says what it answered."""


@dataclass(frozen=True)
class WebhookUrl:
    https: bool
    host: str
    port: int
    authority: str  # the Host header
    path: str

    @classmethod
    def parse(cls, url: str) -> WebhookUrl:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        https = parts.scheme == "https"
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return cls(https, parts.hostname, parts.port or (443 if https else 80),
                   parts.netloc.rpartition("@")[2], path)


def _request(url: WebhookUrl, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [f"POST {url.path} HTTP/1.1", f"Host: {url.authority}",
             f"Content-Length: {len(body)}", "Connection: close",
             *(f"{name}: {value}" for name, value in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


_STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([1-5][0-9]{2})(?: [^\r\n]*)?\r?\n")
MAX_INTERIM_ANSWERS = 10


async def _skip_headers(reader: asyncio.StreamReader) -> None:
    for _ in range(MAX_HEADER_LINES):
        if (await reader.readline()).strip() == b"":
            return
    raise DeliveryFailed(f"more than {MAX_HEADER_LINES} header lines in the answer")


async def _status(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """The final answer's status code (past any 1xx), and for a failure its body's start."""
    for _ in range(MAX_INTERIM_ANSWERS):
        line = await reader.readline()
        if not line:
            raise DeliveryFailed("the connection closed without an answer")
        match = _STATUS_LINE.fullmatch(line)
        if match is None:
            raise DeliveryFailed(f"not an HTTP/1.x status line: {line[:80]!r}")
        status = int(match.group(1))
        if 200 <= status < 300:
            return status, b""
        await _skip_headers(reader)
        if status >= 200 or status == 101:
            return status, await reader.read(MAX_ANSWER_BYTES)
    raise DeliveryFailed(f"more than {MAX_INTERIM_ANSWERS} interim (1xx) answers")


async def post(url: WebhookUrl, body: bytes, headers: dict[str, str],
               context: ssl.SSLContext) -> tuple[int, bytes]:
    """One HTTP/1.1 POST; cancelling it closes the connection at once."""
    reader, writer = await asyncio.open_connection(
        url.host, url.port, ssl=context if url.https else None,
        server_hostname=url.host if url.https else None, limit=MAX_ANSWER_BYTES)
    try:
        writer.write(_request(url, body, headers))
        await writer.drain()
        return await _status(reader)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), CLOSE_SECONDS)


def webhook(url: str) -> Target:
    """POST the notification as JSON; any 2xx answer is success."""
    target = WebhookUrl.parse(url)
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
            status, answer = await post(target, body, headers, context)
        except (OSError, ValueError, ssl.SSLError) as error:
            raise DeliveryFailed(f"{type(error).__name__}: {error}") from None
        if not 200 <= status < 300:
            raise DeliveryFailed(f"HTTP {status}: {answer[:200]!r}")

    return deliver


class ThreadedCalls:
    """Runs a synchronous function per record, never two at once for the same record.

    A call that outlives the attempt's timeout keeps running (a thread cannot be
    stopped); until it returns, the record's next attempt fails at once instead of
    racing it. Threads are daemons, so a call that never returns cannot hold up the
    process's exit, and at most ``max_threads`` run at once.
    """

    def __init__(self, function: Callable[[dict[str, Any]], Any], max_threads: int) -> None:
        self._function = function
        self._max_threads = max_threads
        self._running: dict[str, concurrent.futures.Future[Any]] = {}

    async def call(self, record: str, document: dict[str, Any]) -> None:
        self._forget_finished()
        if record in self._running:
            raise DeliveryFailed("the handler's previous call for this record has not "
                                 "returned yet")
        if len(self._running) >= self._max_threads:
            raise DeliveryFailed(f"all {self._max_threads} handler threads are busy with "
                                 "calls that have not returned")
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        threading.Thread(target=self._run, args=(future, document), name="omgate-handler",
                         daemon=True).start()
        self._running[record] = future
        await asyncio.wrap_future(future)

    def _run(self, future: concurrent.futures.Future[Any], document: dict[str, Any]) -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(self._function(document))
        except BaseException as error:  # noqa: BLE001 - handed to the awaiting attempt
            future.set_exception(error)

    def _forget_finished(self) -> None:
        for record in [key for key, future in self._running.items() if future.done()]:
            del self._running[record]


def _record_key(notification: StoredNotification) -> str:
    record = notification.record_id or notification.notification_id
    return f"{notification.organization_id[:15]}:{record[:15]}"


def handler(reference: str, max_threads: int = 8) -> Target:
    """Call ``module:function`` with the notification's JSON document (async or not)."""
    module_name, _, function_name = reference.partition(":")
    try:
        function: Callable[[dict[str, Any]], Any] = getattr(
            importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"cannot load the delivery handler {reference!r}: {error}") from None
    threaded = (None if inspect.iscoroutinefunction(function)
                else ThreadedCalls(function, max_threads))

    async def deliver(notification: StoredNotification, _attempt: int) -> None:
        document = notification.delivery_document()
        if threaded is None:
            await function(document)
        else:
            await threaded.call(_record_key(notification), document)

    return deliver
