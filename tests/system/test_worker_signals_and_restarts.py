"""`omgate serve`'s workers against signals and restarts: SIGHUP with no certificate to
reload leaves them serving, and a worker restarted from files that no longer load says why
(tests/system/test_supervisor_signals.py: a SIGTERM during a worker's fork)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from harness import ROOT, logged_events, omgate_command, to_toml

from service.tools.pki import issue, name


def _events(log: Path, event: str) -> list[dict[str, Any]]:
    return [e for e in logged_events(log) if e.get("event") == event]


@contextmanager
def _serving(tmp_path: Path, server: dict[str, Any]) -> Iterator[tuple[subprocess.Popen, Path]]:
    """`omgate serve` with these [server] settings and a SQLite inbox, once every worker
    has started; its JSON log. Killed with its workers if a test leaves it running."""
    config = tmp_path / "omgate.toml"
    config.write_text(to_toml({"server": {"shutdown_timeout": 5, **server},
                               "inbox": {"url": f"sqlite:///{tmp_path / 'inbox.db'}"}}))
    log = tmp_path / "omgate.log"
    with log.open("ab") as out:
        process = subprocess.Popen(omgate_command("serve", "--config", str(config)), cwd=ROOT,
                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                   env={**os.environ, "OMGATE_LOGGING__FORMAT": "json"})
    try:
        _wait_until(lambda: len(_events(log, "server.started")) >= server.get("workers", 1),
                    process, log)
        yield process, log
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def _wait_until(done: Any, process: subprocess.Popen, log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline and process.poll() is None, log.read_text()[-2000:]
        time.sleep(0.1)


@pytest.mark.parametrize("workers", [1, 2])
def test_sighup_without_a_tls_listener_leaves_every_worker_serving(tmp_path: Path, workers: int):
    """SIGHUP (systemctl reload, a reloader sidecar) on a deployment without server.bind: a
    plain listener behind a TLS-terminating balancer has no certificate to reload, and the
    signal killed the worker (its default action), every worker at once with several."""
    with _serving(tmp_path, {"bind": [], "plain_bind": ["127.0.0.1:0"],
                             "workers": workers}) as (process, log):
        time.sleep(1)  # well after startup: the handlers are all in place by now
        process.send_signal(signal.SIGHUP)
        time.sleep(2)
        assert process.poll() is None, f"omgate exited on SIGHUP with {process.returncode}"
        exited = _events(log, "supervisor.worker_exited")
        assert exited == [], f"SIGHUP killed workers: {exited}"
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0


def test_a_worker_that_cannot_restart_says_why(tmp_path: Path, dev_pki: Path):
    """A restarted worker prepares afresh from the files as they are now; when that failed,
    the log said only that it exited with status 1 (again and again, 1, 2, 4 ... 60 s
    apart)."""
    certfile, keyfile = tmp_path / "server.pem", tmp_path / "server.key"
    certfile.write_bytes((dev_pki / "server.pem").read_bytes())
    keyfile.write_bytes((dev_pki / "server.key").read_bytes())
    with _serving(tmp_path, {"bind": ["127.0.0.1:0"], "certfile": certfile, "keyfile": keyfile,
                             "workers": 2, "reload_check_seconds": 0}) as (process, log):
        # A rotation gone wrong (the running workers keep their pair, by design)...
        keyfile.write_bytes(issue(name("another")).key_pem())
        # ...and then one worker dies (the kernel's OOM killer, say).
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
        os.kill(int(children[0]), signal.SIGKILL)
        _wait_until(lambda: any("exit_code" in e
                                for e in _events(log, "supervisor.worker_exited")),
                    process, log)
        text = log.read_text()
        assert "does not belong to the certificate" in text, (
            "the restarted worker failed and nothing says why:\n" + text[-1500:])
