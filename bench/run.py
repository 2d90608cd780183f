"""`make bench`: start omgate with client certificates required, drive it, print a table.

The load generator (bench/loadgen.py) runs in its own process and presents a
client certificate on every connection; server and generator are pinned to
different cores when `taskset` exists. Each row runs for --seconds. The same
message is sent over and over: after the first, each is a redelivery, acked
after a transaction that finds it already stored.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from service.tools.pki import build_dev_pki, dev_files  # noqa: E402

PAYLOAD = ROOT / "tests" / "fixtures" / "external" / "payloads" / "amplabs-create_account.xml"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _pinned(command: list[str], core: int) -> list[str]:
    taskset = shutil.which("taskset")
    if taskset and (os.cpu_count() or 1) > 1:
        return [taskset, "-c", str(core), *command]
    return command


def _start_server(folder: Path, port: int, health: int) -> subprocess.Popen[bytes]:
    for filename, content in dev_files(build_dev_pki()).items():
        (folder / filename).write_bytes(content)
    (folder / "omgate.toml").write_text(f"""
[server]
bind = ["127.0.0.1:{port}"]
health_bind = "127.0.0.1:{health}"
certfile = "server.pem"
keyfile = "server.key"
[client_auth]
mode = "require"
trust = ["client-ca.pem"]
[inbox]
url = "sqlite:///inbox.db"
[logging]
level = "warning"
format = "json"
""")
    command = [sys.executable, "-m", "service", "serve", "--config", str(folder / "omgate.toml")]
    process = subprocess.Popen(_pinned(command, 0), cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=(folder / "server.log").open("wb"))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{health}/readyz", timeout=1):
                return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit(f"omgate did not start:\n{(folder / 'server.log').read_text()}")


def _load(folder: Path, port: int, mode: str, concurrency: int, seconds: float) -> dict:
    command = [sys.executable, str(ROOT / "bench" / "loadgen.py"),
               "--url", f"https://localhost:{port}/salesforce/outbound",
               "--ca", str(folder / "ca.pem"), "--cert", str(folder / "client-chain.pem"),
               "--key", str(folder / "client.key"), "--body", str(PAYLOAD),
               "--mode", mode, "--concurrency", str(concurrency), "--seconds", str(seconds)]
    output = subprocess.run(_pinned(command, 1), capture_output=True, text=True, check=True,
                            timeout=seconds + 60).stdout
    return json.loads(output)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="omgate-bench-") as temp:
        folder = Path(temp)
        port, health = _free_port(), _free_port()
        server = _start_server(folder, port, health)
        try:
            rows = [
                ("new TLS connection + client cert per message", "handshakes/s",
                 _load(folder, port, "new-connection", 16, args.seconds)),
                ("keep-alive, client cert, 1 notification/message", "acks/s",
                 _load(folder, port, "keep-alive", 32, args.seconds)),
            ]
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(30)
    print(f"{'scenario':<50} {'rate':>20} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for label, unit, result in rows:
        rate = f"{result['rate']} {unit}"
        print(f"{label:<50} {rate:>20} {result['p50_ms']:>8} {result['p99_ms']:>8} "
              f"{result['errors']:>7}")


if __name__ == "__main__":
    main()
