"""`make bench`: start omgate with client certificates required, drive it, print a table.

The load generator (bench/loadgen.py) runs in its own process and presents a client
certificate on every connection; server and generator are pinned to different cores
when `taskset` exists. Rows:

- handshakes: a new TLS connection with a client certificate for every message;
- durable commits: keep-alive connections sending messages with fresh notification IDs,
  so every acknowledgement waited for a durable commit, on SQLite and on PostgreSQL
  (when it is installed), with and without group commit.
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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

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


@contextmanager
def omgate(folder: Path, inbox_url: str, group_commit: bool) -> Iterator[int]:
    """An omgate server on its own core; yields its TLS port."""
    port, health = _free_port(), _free_port()
    config = folder / f"omgate-{port}.toml"
    config.write_text(f"""
[server]
bind = ["127.0.0.1:{port}"]
health_bind = "127.0.0.1:{health}"
certfile = "server.pem"
keyfile = "server.key"
[client_auth]
mode = "require"
trust = ["client-ca.pem"]
[inbox]
url = "{inbox_url}"
group_commit = {"true" if group_commit else "false"}
[logging]
level = "warning"
format = "json"
""")
    log = folder / f"server-{port}.log"
    command = [sys.executable, "-m", "service", "serve", "--config", str(config)]
    process = subprocess.Popen(_pinned(command, 0), cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=log.open("wb"))
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{health}/readyz", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise SystemExit(f"omgate did not start:\n{log.read_text()}") from None
                time.sleep(0.1)
        yield port
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)


def load(folder: Path, port: int, mode: str, concurrency: int, seconds: float,
         unique: bool = False, run_id: str = "00") -> dict:
    command = [sys.executable, str(ROOT / "bench" / "loadgen.py"),
               "--url", f"https://localhost:{port}/salesforce/outbound",
               "--ca", str(folder / "ca.pem"), "--cert", str(folder / "client-chain.pem"),
               "--key", str(folder / "client.key"), "--body", str(PAYLOAD),
               "--mode", mode, "--concurrency", str(concurrency), "--seconds", str(seconds),
               "--run-id", run_id, *(["--unique"] if unique else [])]
    output = subprocess.run(_pinned(command, 1), capture_output=True, text=True, check=True,
                            timeout=seconds + 120).stdout
    return json.loads(output)


def postgres_url() -> tuple[str | None, object]:
    try:
        from postgres_server import start_postgres

        server = start_postgres()
    except BaseException as error:  # noqa: BLE001 - pytest's skip is a BaseException
        print(f"(PostgreSQL rows skipped: {error})", file=sys.stderr)
        return None, None
    return server.new_database(), server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5)
    args = parser.parse_args()
    rows: list[tuple[str, str, dict]] = []
    with tempfile.TemporaryDirectory(prefix="omgate-bench-") as temp:
        folder = Path(temp)
        for filename, content in dev_files(build_dev_pki()).items():
            (folder / filename).write_bytes(content)
        sqlite = f"sqlite:///{folder / 'inbox.db'}"
        with omgate(folder, sqlite, True) as port:
            rows.append(("new TLS connection + client cert per message", "handshakes/s",
                         load(folder, port, "new-connection", 16, args.seconds)))
            rows.append(("keep-alive, redeliveries (no write)", "acks/s",
                         load(folder, port, "keep-alive", 32, args.seconds)))
        pg_url, pg_server = postgres_url()
        inboxes = [("SQLite", sqlite)] + ([("PostgreSQL", pg_url)] if pg_url else [])
        for run, (label, url) in enumerate(inboxes):
            for group_commit in (True, False):
                with omgate(folder, url, group_commit) as port:
                    result = load(folder, port, "keep-alive", 32, args.seconds, unique=True,
                                  run_id=f"{run}{int(group_commit)}")
                grouping = "group commit" if group_commit else "one commit per message"
                rows.append((f"durable commits, {label}, {grouping}", "msgs/s", result))
        if pg_server is not None:
            pg_server.stop()  # type: ignore[attr-defined]
    print(f"{'scenario':<56} {'rate':>20} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for label, unit, result in rows:
        rate = f"{result['rate']} {unit}"
        print(f"{label:<56} {rate:>20} {result['p50_ms']:>8} {result['p99_ms']:>8} "
              f"{result['errors']:>7}")


if __name__ == "__main__":
    main()
