"""`server.workers`: several processes on one port, one inbox, summed metrics."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time

import httpx
from harness import SOAP_HEADERS, is_ack, run_omgate
from messages import envelope, notification


def worker_pids(server) -> list[int]:
    listed = subprocess.run(["pgrep", "-P", str(server.process.pid)], capture_output=True,
                            text=True, check=False).stdout
    return [int(pid) for pid in listed.split()]


def test_two_workers_share_the_port_the_inbox_and_the_metrics(omgate_server):
    server = omgate_server({"server": {"workers": 2}})
    deadline = time.monotonic() + 10
    while len(server.events("server.started")) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sorted(e["worker"] for e in server.events("server.started")) == [0, 1]
    results: list[bool] = []

    def sender(number: int) -> None:
        for index in range(10):
            body = envelope(notification(f"04lW{number}{index:010d}AAA"))
            with server.client() as client:  # a new connection each time: both workers serve
                results.append(is_ack(client.post("/salesforce/outbound", content=body,
                                                  headers=SOAP_HEADERS)))

    threads = [threading.Thread(target=sender, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert results.count(True) == 40
    served_by = {e["peer"] for e in server.events("om.accepted")}
    assert len(served_by) == 40
    stored = json.loads(run_omgate("inbox", "list", "--config", str(server.config_path),
                                   "--limit", "100").stdout)
    assert len(stored) == 40
    metrics = httpx.get(f"http://127.0.0.1:{server.extra['health_port']}/metrics").text
    assert 'omgate_messages_total{reason="",result="accepted"} 40.0' in metrics

    [first, second] = worker_pids(server)
    os.kill(first, signal.SIGKILL)  # a worker dies: the supervisor starts another
    deadline = time.monotonic() + 10
    while len(server.events("server.started")) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(server.events("server.started")) == 3
    assert second in worker_pids(server)
    assert server.stop() == 0
    assert len(server.events("server.stopped")) == 2


def test_workers_that_cannot_listen_stop_the_supervisor(omgate_server, shared_server):
    server = omgate_server({"server": {"workers": 2,
                                       "bind": [f"127.0.0.1:{shared_server.https_port}"]}},
                           wait=False)
    assert server.process.wait(30) == 1
    assert "could not start" in server.log_path.read_text()
