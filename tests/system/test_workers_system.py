"""`server.workers`: several processes on one port, one inbox, summed metrics."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time

import httpx
import pytest
from harness import SOAP_HEADERS, can_listen, is_ack, run_omgate
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


def wait_for_workers(server, count: int) -> None:
    deadline = time.monotonic() + 15
    while len(server.events("server.started")) < count and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(server.events("server.started")) == count


@pytest.mark.parametrize(("taken", "workers"), [("bind", 2), ("bind", 1), ("health_bind", 2)])
def test_a_second_omgate_on_a_taken_port_stops_and_the_first_keeps_serving(
        omgate_server, tmp_path, taken, workers):
    first = omgate_server({"server": {"workers": workers}})
    wait_for_workers(first, workers)
    # the second has its own inbox: before, it took part of the first's traffic into it
    second_config = {"server": {"workers": workers},
                     "inbox": {"url": f"sqlite:///{tmp_path / 'second.db'}"}}
    if taken == "bind":
        address = f"127.0.0.1:{first.https_port}"
        second = omgate_server(second_config, port=first.https_port, wait=False)
    else:
        address = f"127.0.0.1:{first.extra['health_port']}"
        second_config["server"]["health_bind"] = address
        second = omgate_server(second_config, wait=False)
    assert second.process.wait(20) == 2
    output = second.log_path.read_text()
    assert f"cannot listen on {address} ([server] {taken}): address already in use" in output
    assert not second.events("server.started")
    for index in range(10):
        body = envelope(notification(f"04lW9{index:010d}AAA"))
        with first.client() as client:  # a new connection each time
            assert is_ack(client.post("/salesforce/outbound", content=body,
                                      headers=SOAP_HEADERS))
    assert len(first.events("om.accepted")) == 10
    assert first.process.poll() is None


def test_the_supervisor_logs_json_and_backs_off_a_worker_that_keeps_dying(omgate_server):
    server = omgate_server({"server": {"workers": 2}})
    wait_for_workers(server, 2)
    time.sleep(3.5)  # both have run past their start
    seen = set(worker_pids(server))
    os.kill(min(seen), signal.SIGKILL)
    kills = 1
    deadline = time.monotonic() + 30
    while kills < 4 and time.monotonic() < deadline:  # kill each new one as it starts
        for pid in set(worker_pids(server)) - seen:
            seen.add(pid)
            os.kill(pid, signal.SIGKILL)
            kills += 1
        time.sleep(0.02)
    last_kill = time.monotonic()
    while len(server.events("supervisor.worker_exited")) < 4 and time.monotonic() < deadline:
        time.sleep(0.1)
    exits = server.events("supervisor.worker_exited")
    assert [e["restart_in_seconds"] for e in exits] == [0.0, 1.0, 2.0, 4.0]
    assert {e["signal"] for e in exits} == {"SIGKILL"}
    assert len({e["worker"] for e in exits}) == 1
    assert exits[0]["ran_seconds"] > 3 and all(e["ran_seconds"] < 3 for e in exits[1:])
    lines = server.log_path.read_text().splitlines()
    assert lines and all(line.startswith("{") for line in lines), lines  # JSON, no print
    assert server.events("supervisor.started")[0]["workers"] == 2
    while len(worker_pids(server)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(worker_pids(server)) == 2  # it came back...
    assert time.monotonic() - last_kill > 3.5  # ...after the 4 seconds it was given
    assert server.stop() == 0


def test_workers_stop_when_their_supervisor_is_killed(omgate_server):
    # An orphaned worker would keep the port with nobody to restart or stop it, and a new
    # omgate could not start on it.
    server = omgate_server({"server": {"workers": 2}})
    wait_for_workers(server, 2)
    workers = worker_pids(server)
    assert len(workers) == 2
    server.process.kill()
    server.process.wait(10)
    deadline = time.monotonic() + 15
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(pid) for pid in workers)
    assert can_listen(server.https_port)


def alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie waiting for init to reap it does not)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
