"""Where notifications go: a webhook (``webhook.py``) or a callable, ``module:function``.

A target is awaited under the worker's per-attempt timeout and must stop when cancelled,
or a late first attempt could land after a retry and after the record's next
notification. Cancelling the webhook closes its connection; a synchronous handler runs in
a thread that cannot be stopped, so the record's next call waits until the previous one
has returned.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib
import inspect
import threading
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, runtime_checkable

from service.inbox import StoredNotification

Target = Callable[[StoredNotification, int], Awaitable[None]]


@runtime_checkable
class ClosingTarget(Protocol):
    """A target that holds connections (the webhook): closed when delivery stops."""

    async def __call__(self, notification: StoredNotification, attempt: int) -> None: ...

    async def aclose(self) -> None: ...


class DeliveryFailed(Exception):
    """The target did not take the notification; the message says what it answered."""


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
