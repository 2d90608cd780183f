"""SIGHUP (systemctl reload, a reloader sidecar) on a deployment without server.bind: a
plain-HTTP listener behind a TLS-terminating balancer has no certificate to reload, and
the signal must leave omgate serving, not kill it."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from harness import ROOT, logged_events, omgate_command, to_toml


def _wait_for(log: Path, name: str, count: int, process: subprocess.Popen, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = [e for e in logged_events(log) if e.get("event") == name]
        if len(events) >= count:
            return events
        assert process.poll() is None, log.read_text()[-2000:]
        time.sleep(0.1)
    raise AssertionError(f"no {count} {name} in {log.read_text()[-2000:]}")


@pytest.mark.parametrize("workers", [1, 2])
def test_sighup_without_a_tls_listener_leaves_every_worker_serving(tmp_path: Path, workers: int):
    config = tmp_path / "omgate.toml"
    config.write_text(to_toml({
        "server": {"bind": [], "plain_bind": ["127.0.0.1:0"], "workers": workers,
                   "shutdown_timeout": 5},
        "inbox": {"url": f"sqlite:///{tmp_path / 'inbox.db'}"},
    }))
    log = tmp_path / "omgate.log"
    with log.open("ab") as out:
        process = subprocess.Popen(omgate_command("serve", "--config", str(config)), cwd=ROOT,
                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                   env={**os.environ, "OMGATE_LOGGING__FORMAT": "json"})
    try:
        _wait_for(log, "server.started", workers, process)
        time.sleep(1)  # well after startup: the handlers are all in place by now
        process.send_signal(signal.SIGHUP)
        time.sleep(2)
        exited = [e for e in logged_events(log) if e.get("event") == "supervisor.worker_exited"]
        assert process.poll() is None, f"omgate exited on SIGHUP with {process.returncode}"
        assert exited == [], f"SIGHUP killed workers: {exited}"
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
