"""A worker restarted by the supervisor prepares afresh from the files as they are now; when
that fails, the log must say why, not only that it exited with status 1 (and again, and
again, 1, 2, 4 ... 60 s apart)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from harness import ROOT, logged_events, omgate_command, to_toml

from service.tools.pki import issue, name


def _events(log: Path, event: str) -> list[dict]:
    return [e for e in logged_events(log) if e.get("event") == event]


def test_a_worker_that_cannot_restart_says_why(tmp_path: Path, dev_pki: Path):
    certfile, keyfile = tmp_path / "server.pem", tmp_path / "server.key"
    certfile.write_bytes((dev_pki / "server.pem").read_bytes())
    keyfile.write_bytes((dev_pki / "server.key").read_bytes())
    config = tmp_path / "omgate.toml"
    config.write_text(to_toml({
        "server": {"bind": ["127.0.0.1:0"], "certfile": certfile, "keyfile": keyfile,
                   "workers": 2, "reload_check_seconds": 0, "shutdown_timeout": 5},
        "inbox": {"url": f"sqlite:///{tmp_path / 'inbox.db'}"},
    }))
    log = tmp_path / "omgate.log"
    with log.open("ab") as out:
        process = subprocess.Popen(omgate_command("serve", "--config", str(config)), cwd=ROOT,
                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                   env={**os.environ, "OMGATE_LOGGING__FORMAT": "json"})
    try:
        deadline = time.monotonic() + 30
        while len(_events(log, "server.started")) < 2:
            assert time.monotonic() < deadline and process.poll() is None, log.read_text()
            time.sleep(0.1)
        # A rotation gone wrong (the running workers keep their pair, by design)...
        keyfile.write_bytes(issue(name("another")).key_pem())
        # ...and then one worker dies (the kernel's OOM killer, say).
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
        os.kill(int(children[0]), signal.SIGKILL)
        while not [e for e in _events(log, "supervisor.worker_exited") if "exit_code" in e]:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        text = log.read_text()
        assert "does not belong to the certificate" in text, (
            "the restarted worker failed and nothing says why:\n" + text[-1500:])
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
