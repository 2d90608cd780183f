"""omgate's main app alone, in this process: the CPU of a request from the ASGI call to the
answer, without sockets, TLS or HTTP parsing (issue 23).

The rows of `make bench` measure whole servers on a shared machine, where a change of a few
percent is lost in the spread between rounds. This drives the app `omgate serve` builds
(same configuration, policy, inbox, group commit, chain registry, metrics and JSON log) with
the bench's payload, as 32 clients on one event loop, and prints the CPU per request:

- ``--identity forwarded``: a plain listener behind a trusted proxy that forwards the
  client's certificate (``pem-header:X-SSL-Client-Cert``), as row (e) does: the decision is
  made, logged and counted for every request;
- ``--identity tls``: a TLS connection whose chain was decided at its handshake, as row (a)
  (every request on one connection: its decision is logged once).

Under valgrind the count of instructions is exact and does not depend on the machine's
load: run it twice with the same ``--pki`` folder and different ``--requests`` (a key made
anew differs in cost from run to run), and divide the difference of the main thread's
totals by the difference of requests (docs/PERFORMANCE.md, "The plain listener's decision
per request"):

    valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file=cg.out \\
        .venv/bin/python bench/app_path.py --pki /tmp/pki --requests 900 --rounds 1
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import re
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from cryptography import x509
from run import BEHIND_PROXY, FORWARDED_LEAF, PAYLOAD_1, batch_message, prepare

from service.clientauth.presented import PresentedChain
from service.collector import settle_garbage_collector
from service.config import load_config
from service.connections import OpenConnections
from service.forwarded.origin import ConnectionOrigin
from service.identity import CONNECTION_KEY, ConnectionFacts
from service.logs import configure_logging
from service.server import (
    WorkerParts,
    build_worker_parts,
    connection_limits,
    worker_main_app,
)
from service.server import prepare as prepare_service

PATH = "/salesforce/outbound"
# row (e)'s nginx, a trusted proxy; the sender nginx names, or that the TLS listener serves
# (not a trusted proxy: its TLS chain is what it is judged on)
NGINX = ("127.0.0.1", 40000)
SENDER = ("198.51.100.7", 40000)
NOTIFICATION_ID = re.compile(rb"<Id>04l[0-9A-Za-z]{12,15}</Id>")
# the configuration of row (e)'s omgate (bench/run.py), with nothing to listen on
CONFIG = f"""
[server]
{BEHIND_PROXY.format(port=1)}
health_bind = "127.0.0.1:2"
[client_auth]
mode = "require"
{FORWARDED_LEAF}
[inbox]
url = "sqlite:///{{folder}}/inbox.db"
"""

App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


async def built_app(folder: Path, identity: str
                    ) -> tuple[App, ConnectionFacts, WorkerParts]:
    """The main app, the connection facts its listener would give every request, and what
    the app was built from (to close)."""
    (folder / "omgate.toml").write_text(CONFIG.format(folder=folder))
    config = load_config(folder / "omgate.toml", {})
    parts = await build_worker_parts(config, prepare_service(config))
    app = worker_main_app(parts, OpenConnections(connection_limits(config, 10_000)))
    settle_garbage_collector()  # as a worker does once it listens
    if identity == "forwarded":
        return app, ConnectionFacts(ConnectionOrigin(NGINX)), parts
    chain = x509.load_pem_x509_certificates((folder / "client-chain.pem").read_bytes())
    client = PresentedChain(tuple(chain)).identity("tls", f"{SENDER[0]}:{SENDER[1]}")
    verdict = parts.gate.evaluate(client)
    if not verdict.decision.accepted:
        raise SystemExit(f"the bench's client chain is refused: {verdict.decision}")
    return app, ConnectionFacts(ConnectionOrigin(SENDER), client, verdict), parts


class Requests:
    """Requests with new notification IDs, as nginx forwards them or a client sends them."""

    def __init__(self, folder: Path, facts: ConnectionFacts, payload: Path) -> None:
        self._payload = payload.read_bytes()
        self._serial = itertools.count()
        self._facts = facts
        self._peer = SENDER if facts.client is not None else NGINX
        certificate = quote((folder / "client.pem").read_text(), safe="").encode()
        self._forwarded = [] if facts.client is not None else [
            (b"x-forwarded-for", SENDER[0].encode()), (b"x-ssl-client-verify", b"SUCCESS"),
            (b"x-ssl-client-cert", certificate)]

    def bodies(self, count: int) -> list[bytes]:
        """``count`` bodies with new notification IDs, made before a round is timed (a
        server is handed its bodies: making them is no part of a request's cost)."""
        return [NOTIFICATION_ID.sub(
            lambda _: f"<Id>04lap{next(self._serial):010d}AAA</Id>".encode(), self._payload)
            for _ in range(count)]

    async def send_one(self, app: App, body: bytes) -> None:
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": "POST", "scheme": "http", "path": PATH, "raw_path": PATH.encode(),
            "query_string": b"", "root_path": "", "client": self._peer, "server": ("127.0.0.1", 1),
            "headers": [(b"host", b"127.0.0.1"), *self._forwarded,
                        (b"content-type", b"text/xml; charset=utf-8"), (b"soapaction", b'""'),
                        (b"content-length", str(len(body)).encode())],
            "extensions": {CONNECTION_KEY: self._facts}}
        messages = iter([{"type": "http.request", "body": body, "more_body": False}])
        answer: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return next(messages, {"type": "http.disconnect"})

        async def send(message: dict[str, Any]) -> None:
            answer.append(message)

        await app(scope, receive, send)
        if answer[0]["status"] != 200:
            raise SystemExit(f"answered {answer[0]['status']}: {answer[1:]}")


async def drive(app: App, requests: Requests, bodies: list[bytes], concurrency: int) -> None:
    left = iter(bodies)

    async def client() -> None:
        for body in left:
            await requests.send_one(app, body)

    await asyncio.gather(*(client() for _ in range(concurrency)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--identity", choices=("forwarded", "tls"), default="forwarded")
    parser.add_argument("--requests", type=int, default=3000, help="per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--notifications", type=int, choices=(1, 100), default=1,
                        help="per message: row (a)'s message, or row (b)'s")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON line at the end: each round's µs of CPU a request")
    parser.add_argument("--pki", type=Path, help="a folder the bench's PKI is made in once "
                        "and read from afterwards (the same keys, the same instructions)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="omgate-app-path-") as temporary:
        folder = Path(temporary)
        if args.pki is not None and not (args.pki / "client.pem").exists():
            args.pki.mkdir(parents=True, exist_ok=True)
            prepare(args.pki)
        if args.pki is not None:
            for item in args.pki.iterdir():
                shutil.copy(item, folder / item.name)
        else:
            prepare(folder)
        with (folder / "omgate.log").open("w") as log:
            configure_logging("json", "info", stream=log)
            asyncio.run(measure(folder, args))


async def measure(folder: Path, args: argparse.Namespace) -> None:
    app, facts, parts = await built_app(folder, args.identity)
    try:
        payload = PAYLOAD_1 if args.notifications == 1 else batch_message(folder)
        rounds = await _rounds(app, Requests(folder, facts, payload), args)
    finally:
        await parts.inbox.close()
        parts.gate.close()
    if args.json:
        print(json.dumps({"identity": args.identity, "notifications": args.notifications,
                          "cpu_us": [round(cpu, 1) for cpu, _, _ in rounds]}))


async def _rounds(app: App, requests: Requests, args: argparse.Namespace
                  ) -> list[tuple[float, float, float]]:
    """Each round's CPU, event loop thread's CPU and elapsed time, in µs a request."""
    # warm: caches, the inbox, the registry
    await drive(app, requests, requests.bodies(300), args.concurrency)
    rounds = []
    for _ in range(args.rounds):
        bodies = requests.bodies(args.requests)
        process, thread, wall = time.process_time(), time.thread_time(), time.perf_counter()
        await drive(app, requests, bodies, args.concurrency)
        per_request = 1e6 / args.requests
        figures = ((time.process_time() - process) * per_request,
                   (time.thread_time() - thread) * per_request,
                   (time.perf_counter() - wall) * per_request)
        rounds.append(figures)
        if not args.json:
            print(f"{args.identity}: {figures[0]:.1f} µs of CPU a request ({figures[1]:.1f} µs "
                  f"on the event loop's thread), {figures[2]:.1f} µs elapsed", flush=True)
    return rounds


if __name__ == "__main__":
    main()
