"""Acknowledged means stored: SIGKILL in the middle of a stream loses nothing that was acked."""

from __future__ import annotations

import json
import random
import threading
import time

import httpx
from harness import SOAP_HEADERS, free_port, is_ack, run_omgate
from messages import envelope, notification

SENDERS = 4
CYCLES = 20


def notification_ids(cycle: int, sender: int, sequence: int) -> list[str]:
    # The first 15 characters must differ: they are the ID (the last 3 are a checksum).
    return [f"04l{chr(65 + cycle)}{sender}{part}{sequence:09d}AAA" for part in "BCD"]


def stream(server, cycle: int, sender: int, acked: set[str], lock: threading.Lock,
           stop: threading.Event) -> None:
    sequence = 0
    with server.client() as client:
        while not stop.is_set():
            ids = notification_ids(cycle, sender, sequence)
            body = envelope(*(notification(item) for item in ids))
            try:
                response = client.post("/salesforce/outbound", content=body,
                                       headers=SOAP_HEADERS)
            except httpx.HTTPError:
                return  # the server is gone; whatever was not acked may be lost
            if is_ack(response):
                with lock:
                    acked.update(ids)
            sequence += 1


def test_sigkill_mid_stream_loses_no_acknowledged_notification(omgate_server):
    port = free_port()
    acked: set[str] = set()
    lock = threading.Lock()
    rng = random.Random(20261126)
    server = omgate_server(port=port)
    for cycle in range(CYCLES):
        stop = threading.Event()
        senders = [threading.Thread(target=stream, args=(server, cycle, s, acked, lock, stop))
                   for s in range(SENDERS)]
        for thread in senders:
            thread.start()
        target = len(acked) + rng.randint(10, 60)
        deadline = time.monotonic() + 60
        while len(acked) < target and time.monotonic() < deadline:
            time.sleep(0.005)
        server.kill()  # SIGKILL: no chance to flush anything that was not committed
        stop.set()
        for thread in senders:
            thread.join(30)
        server = omgate_server(port=port)
    stored = [json.loads(line) for line in run_omgate(
        "inbox", "export", "--config", str(server.config_path)).stdout.splitlines()]
    stored_ids = [item["notification_id"] for item in stored]
    assert len(acked) >= CYCLES * 10
    assert acked <= set(stored_ids), f"acked but missing: {sorted(acked - set(stored_ids))[:5]}"
    assert len(stored_ids) == len(set(stored_ids))
