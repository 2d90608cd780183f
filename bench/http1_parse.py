"""What HTTP/1.1 costs a request, in process: h11, httptools (llhttp) and omgate's core.

`python bench/http1_parse.py` prints microseconds of CPU per request (the least of three
runs) for one Salesforce-sized message and a 3-byte answer: h11 parsing it and writing
the answer (what the core ran on before); httptools parsing it; omgate's sans-IO core
(service/listeners/h1.py, on llhttp through httptools) with its head scan, its own
strictness checks, framing rules and answer. docs/PERFORMANCE.md, "The HTTP/1.1 core",
says what was measured and why the parser is what it is.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import h11
import httptools

from service.listeners.framing import HeadLimits, bodiless
from service.listeners.h1 import ConnectionRules, ServerConnection, StartExchange

PAYLOAD = (Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "external"
           / "payloads" / "amplabs-create_account.xml")
REQUESTS = 20_000


def message() -> bytes:
    body = PAYLOAD.read_bytes()
    return (b"POST /salesforce/outbound HTTP/1.1\r\nHost: omgate.example\r\n"
            b"Content-Type: text/xml; charset=utf-8\r\nAccept: text/xml\r\n"
            b"User-Agent: Jakarta Commons-HttpClient/3.1\r\nSOAPAction: \"\"\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body) + body)


def with_h11(request: bytes) -> None:
    connection = h11.Connection(h11.SERVER)
    for _ in range(REQUESTS):
        connection.receive_data(request)
        while not isinstance(connection.next_event(), h11.EndOfMessage):
            pass
        connection.send(h11.Response(status_code=200, headers=[(b"content-length", b"3")]))
        connection.send(h11.Data(data=b"ack"))
        connection.send(h11.EndOfMessage())
        connection.start_next_cycle()


class _Request:
    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.complete = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.complete = True


def with_httptools(request: bytes) -> None:
    for _ in range(REQUESTS):
        parsed = _Request()
        httptools.HttpRequestParser(parsed).feed_data(request)
        if not parsed.complete:
            raise RuntimeError("httptools did not parse the whole request")


def with_the_core(request: bytes) -> None:
    core = ServerConnection(ConnectionRules(HeadLimits(), bodiless, max_requests=10 ** 9))
    for _ in range(REQUESTS):
        [exchange] = [action.exchange for action in core.receive(request)
                      if isinstance(action, StartExchange)]
        core.start_answer(exchange, 200, [(b"content-length", b"3")])
        core.send_body(exchange, b"ack", more_body=False)


def microseconds(run: Callable[[bytes], None], request: bytes) -> float:
    runs = []
    for _ in range(3):
        started = time.process_time()
        run(request)
        runs.append(time.process_time() - started)
    return min(runs) / REQUESTS * 1e6


def main() -> None:
    request = message()
    print(f"one request of {len(request)} bytes, {REQUESTS} times, CPU per request:")
    for name, run in (("h11", with_h11), ("httptools", with_httptools),
                      ("omgate core (llhttp)", with_the_core)):
        print(f"  {name:20} {microseconds(run, request):7.1f} µs")


if __name__ == "__main__":
    main()
