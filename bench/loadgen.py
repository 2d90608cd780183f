"""A small HTTPS load generator that presents a client certificate on every connection.

Standalone on purpose: it shares no code with omgate's server side.

    python bench/loadgen.py --url https://localhost:8443/salesforce/outbound \
        --ca ca.pem --cert chain.pem --key key.pem --body payload.xml \
        --mode new-connection --concurrency 16 --seconds 5

``--silent-close`` makes the new-connection mode close each connection after its answer
without announcing it (no ``Connection: close``), as a sender that never reuses a
connection may.

Prints one JSON object: requests, acks, errors, seconds, rate, p50_ms, p99_ms.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import re
import ssl
import statistics
import time
from urllib.parse import urlsplit


def _request(host: str, path: str, body: bytes, announce_close: bool) -> bytes:
    connection = "close" if announce_close else "keep-alive"
    return (f"POST {path} HTTP/1.1\r\nHost: {host}\r\n"
            f"Content-Type: text/xml; charset=utf-8\r\nSOAPAction: \"\"\r\n"
            f"Content-Length: {len(body)}\r\nConnection: {connection}\r\n\r\n").encode() + body


async def _read_response(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    return head + await reader.readexactly(length)


class Stats:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.acks = 0
        self.notifications = 0
        self.errors = 0

    def record(self, started: float, response: bytes, notifications: int) -> None:
        self.latencies.append(time.perf_counter() - started)
        if b"<Ack>true</Ack>" in response:
            self.acks += 1
            self.notifications += notifications
        else:
            self.errors += 1


NOTIFICATION_ID = re.compile(rb"<Id>04l[0-9A-Za-z]{12,15}</Id>")
_serial = itertools.count()


def _unique(payload: bytes, run: str) -> bytes:
    """The payload with fresh notification IDs: each message is new, so each commit writes."""
    def fresh(_match: re.Match[bytes]) -> bytes:
        return f"<Id>04l{run}{next(_serial):010d}AAA</Id>".encode()

    return NOTIFICATION_ID.sub(fresh, payload)


async def _worker(args: argparse.Namespace, context: ssl.SSLContext, payload: bytes,
                  deadline: float, stats: Stats) -> None:
    url = urlsplit(args.url)
    port = url.port or 443
    keep_alive = args.mode == "keep-alive"
    announce_close = not keep_alive and not args.silent_close
    host = url.hostname or "localhost"
    request = _request(host, url.path, payload, announce_close)
    reader = writer = None
    while time.perf_counter() < deadline:
        if args.unique:
            request = _request(host, url.path, _unique(payload, args.run_id), announce_close)
        started = time.perf_counter()
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(
                    url.hostname, port, ssl=context, server_hostname=url.hostname)
            writer.write(request)
            response = await _read_response(reader)
            stats.record(started, response, args.notifications)
        except (OSError, asyncio.IncompleteReadError, ssl.SSLError):
            stats.errors += 1
            response = b""
        if not keep_alive or not response:
            if writer is not None:
                writer.close()
            reader = writer = None
    if writer is not None:
        writer.close()


def _percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000


async def _run(args: argparse.Namespace) -> dict[str, float]:
    context = ssl.create_default_context(cafile=args.ca)
    context.load_cert_chain(args.cert, args.key)
    payload = open(args.body, "rb").read()  # noqa: SIM115 - read once
    args.notifications = max(1, len(NOTIFICATION_ID.findall(payload)))
    stats = Stats()
    started = time.perf_counter()
    deadline = started + args.seconds
    await asyncio.gather(*(_worker(args, context, payload, deadline, stats)
                           for _ in range(args.concurrency)))
    elapsed = time.perf_counter() - started
    return {
        "requests": len(stats.latencies), "acks": stats.acks, "errors": stats.errors,
        "seconds": round(elapsed, 2), "rate": round(stats.acks / elapsed, 1),
        "notifications_per_second": round(stats.notifications / elapsed, 1),
        "p50_ms": round(statistics.median(stats.latencies) * 1000, 2) if stats.latencies else 0,
        "p99_ms": round(_percentile(stats.latencies, 0.99), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--cert", required=True, help="client chain, leaf first")
    parser.add_argument("--key", required=True)
    parser.add_argument("--body", required=True)
    parser.add_argument("--mode", choices=("new-connection", "keep-alive"), default="keep-alive")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--unique", action="store_true",
                        help="fresh notification IDs in every message (no duplicates)")
    parser.add_argument("--run-id", default="00", help="two characters kept in every ID")
    parser.add_argument("--silent-close", action="store_true",
                        help="new-connection mode: close after the answer without sending "
                             "Connection: close")
    print(json.dumps(asyncio.run(_run(parser.parse_args()))))


if __name__ == "__main__":
    main()
