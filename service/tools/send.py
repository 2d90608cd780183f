"""``omgate send URL``: a Salesforce simulator for smoke tests and load.

Sends a payload file (``--payload``) or generated messages (``--generate TYPE``)
``--count`` times over ``--concurrency`` keep-alive connections, presenting a client
certificate if given (in its file's order, see :mod:`service.tools.tlsclient`), and
prints one line per message: the ack, the fault, or the transport error. Exit status 1
when any message was not acknowledged.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from queue import Empty, Queue
from typing import TextIO
from urllib.parse import urlsplit

import h11
from OpenSSL import SSL

from service.terminal import escape_controls
from service.tools.messages import describe_answer, outbound_message
from service.tools.tlsclient import (
    HttpClient,
    PlainTransport,
    TlsFailure,
    Transport,
    client_context,
    connect,
    load_client_chain,
)

TIMEOUT_SECONDS = 30
SOAP_HEADERS = [("Content-Type", "text/xml; charset=utf-8"), ("SOAPAction", '""')]


@dataclass(frozen=True)
class Outcome:
    number: int
    result: str  # ack | fault | other | transport_error
    detail: str
    milliseconds: float


@dataclass(frozen=True)
class TlsSetup:
    """The client side of TLS: its context, and what a failure's words need to know."""

    context: SSL.Context
    presents_certificate: bool
    roots: str  # what the server's chain is checked against, as a sentence names it


class Sender:
    """One keep-alive connection; reconnects after a transport error."""

    def __init__(self, url: str, tls: TlsSetup | None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError(f"{url!r} is not an http(s):// URL")
        self.host, self.path = parts.hostname, parts.path or "/"
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.authority = parts.netloc.rpartition("@")[2]
        self.tls = tls if parts.scheme == "https" else None
        self.client: HttpClient | None = None

    def _transport(self) -> Transport:
        if self.tls is None:
            return PlainTransport(socket.create_connection((self.host, self.port),
                                                           timeout=TIMEOUT_SECONDS))
        return connect(self.host, self.port, self.host, self.tls.context, TIMEOUT_SECONDS,
                       check_name=True)

    def _failure(self, error: Exception) -> str:
        if isinstance(error, SSL.Error) and self.tls is not None:
            return TlsFailure.of(error, server_name=self.host,
                                 presented=self.tls.presents_certificate,
                                 roots=self.tls.roots).words
        return f"{type(error).__name__}: {error}"

    def send(self, number: int, body: bytes) -> Outcome:
        started = time.perf_counter()
        try:
            if self.client is None:
                self.client = HttpClient(self._transport(), self.authority,
                                         timeout=TIMEOUT_SECONDS)
            answer = self.client.post(self.path, body, SOAP_HEADERS)
        except (OSError, SSL.Error, h11.ProtocolError) as error:
            self.close()
            return Outcome(number, "transport_error", self._failure(error),
                           (time.perf_counter() - started) * 1000)
        if not self.client.reusable:
            self.close()
        result, detail = describe_answer(answer.status, answer.body)
        return Outcome(number, result, detail, (time.perf_counter() - started) * 1000)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None


def send_messages(url: str, bodies: Callable[[int], bytes], count: int, concurrency: int,
                  tls: TlsSetup | None, report: Callable[[Outcome], None]) -> None:
    work: Queue[int] = Queue()
    for number in range(1, count + 1):
        work.put(number)

    def worker() -> None:
        sender = Sender(url, tls)
        try:
            while True:
                try:
                    number = work.get_nowait()
                except Empty:
                    return
                report(sender.send(number, bodies(number)))
        finally:
            sender.close()

    # daemon threads: Ctrl-C ends the command at once, not after the messages still queued
    threads = [threading.Thread(target=worker, daemon=True)
               for _ in range(max(1, min(concurrency, count)))]
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

    chain = None
    if client_cert is not None:
        chain = load_client_chain(client_cert, client_key)
        note = chain.reordering_note(client_cert)
        if note:
            out.write(f"client certificate chain: {note}\n")
    tls = TlsSetup(client_context(chain, verify_server=True, server_roots=ca),
                   presents_certificate=chain is not None,
                   roots=f"--ca {ca}" if ca else "the system's roots")
    started = time.perf_counter()
    send_messages(url, bodies, count, concurrency, tls, report)
    elapsed = time.perf_counter() - started
    acks = sum(outcome.result == "ack" for outcome in outcomes)
    out.write(f"{acks}/{len(outcomes)} acknowledged in {elapsed:.2f} s "
              f"({len(outcomes) / elapsed:.1f} messages/s)\n")
    return 0 if acks == len(outcomes) else 1
