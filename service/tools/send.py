"""``omgate send URL``: a Salesforce simulator for smoke tests and load.

Sends a payload file (``--payload``) or generated messages (``--generate TYPE``)
``--count`` times over ``--concurrency`` keep-alive connections, presenting a client
certificate if given, and prints one line per message: the ack, the fault, or the
transport error. Exit status 1 when any message was not acknowledged.
"""

from __future__ import annotations

import http.client
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from queue import Empty, Queue
from typing import TextIO
from urllib.parse import urlsplit

from service.terminal import escape_controls
from service.tools.messages import describe_answer, outbound_message

TIMEOUT_SECONDS = 30


@dataclass(frozen=True)
class Outcome:
    number: int
    result: str  # ack | fault | other | transport_error
    detail: str
    milliseconds: float


def client_context(ca: Path | None, client_cert: Path | None,
                   client_key: Path | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca) if ca else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if client_cert is not None:
        context.load_cert_chain(client_cert, client_key)
    return context


class Sender:
    """One keep-alive connection; reconnects after a transport error."""

    def __init__(self, url: str, context: ssl.SSLContext | None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError(f"{url!r} is not an http(s):// URL")
        self.host, self.path = parts.hostname, parts.path or "/"
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.context = context if parts.scheme == "https" else None
        self.connection: http.client.HTTPConnection | None = None

    def _connect(self) -> http.client.HTTPConnection:
        if self.connection is None:
            if self.context is not None:
                self.connection = http.client.HTTPSConnection(
                    self.host, self.port, timeout=TIMEOUT_SECONDS, context=self.context)
            else:
                self.connection = http.client.HTTPConnection(self.host, self.port,
                                                             timeout=TIMEOUT_SECONDS)
        return self.connection

    def send(self, number: int, body: bytes) -> Outcome:
        started = time.perf_counter()
        try:
            connection = self._connect()
            connection.request("POST", self.path, body=body, headers={
                "Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'})
            response = connection.getresponse()
            answer = response.read()
        except (OSError, http.client.HTTPException) as error:
            self.close()
            return Outcome(number, "transport_error", f"{type(error).__name__}: {error}",
                           (time.perf_counter() - started) * 1000)
        if response.will_close:
            self.close()
        result, detail = describe_answer(response.status, answer)
        return Outcome(number, result, detail, (time.perf_counter() - started) * 1000)

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


def send_messages(url: str, bodies: Callable[[int], bytes], count: int, concurrency: int,
                  context: ssl.SSLContext | None, report: Callable[[Outcome], None]) -> None:
    work: Queue[int] = Queue()
    for number in range(1, count + 1):
        work.put(number)

    def worker() -> None:
        sender = Sender(url, context)
        try:
            while True:
                try:
                    number = work.get_nowait()
                except Empty:
                    return
                report(sender.send(number, bodies(number)))
        finally:
            sender.close()

    threads = [threading.Thread(target=worker) for _ in range(max(1, min(concurrency, count)))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def run_send(url: str, out: TextIO, *, payload: Path | None, generate: str | None, count: int,
             notifications: int, concurrency: int, ca: Path | None, client_cert: Path | None,
             client_key: Path | None) -> int:
    if payload is not None:
        data = payload.read_bytes()

        def bodies(_number: int) -> bytes:
            return data
    else:
        def bodies(_number: int) -> bytes:
            return outbound_message(generate or "Account", notifications)[0]

    outcomes: list[Outcome] = []
    lock = threading.Lock()

    def report(outcome: Outcome) -> None:
        with lock:
            outcomes.append(outcome)
            out.write(f"#{outcome.number} {outcome.result}: {escape_controls(outcome.detail)} "
                      f"({outcome.milliseconds:.0f} ms)\n")

    started = time.perf_counter()
    send_messages(url, bodies, count, concurrency, client_context(ca, client_cert, client_key),
                  report)
    elapsed = time.perf_counter() - started
    acks = sum(outcome.result == "ack" for outcome in outcomes)
    out.write(f"{acks}/{len(outcomes)} acknowledged in {elapsed:.2f} s "
              f"({len(outcomes) / elapsed:.1f} messages/s)\n")
    return 0 if acks == len(outcomes) else 1
