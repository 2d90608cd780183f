"""A store on a disk that takes no more bytes fails, and its error names that cause (a
COMMIT that failed has rolled back; the ROLLBACK after it said "no transaction is active"
instead)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from harness import PAYLOADS, ROOT

_FULL_DISK = r'''
import asyncio, datetime as dt, resource, signal, sys
from pathlib import Path
import httpx
from service.app import ServiceState, create_health_app
from service.inbox import InboxError, IncomingMessage, open_inbox
from service.metrics import Metrics
from service.soap import parse_message

folder, payload = Path(sys.argv[1]), Path(sys.argv[2])

def incoming(name: str) -> IncomingMessage:
    body = payload.read_bytes().replace(b"04lxx000000CaSdAAK", name.encode())
    return IncomingMessage(parse_message(body), "/salesforce/outbound", dt.datetime.now(dt.UTC))

async def main() -> None:
    inbox = await open_inbox(f"sqlite:///{folder / 'inbox.db'}")
    app = create_health_app(inbox, ServiceState(), Metrics())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://health") as client:
        await inbox.store(incoming("04lxx000000CaSeAAA"))
        print("before", (await client.get("/readyz")).status_code, flush=True)
        # The disk takes no more bytes (here: this process may not grow any file, as a full
        # file system refuses every write that needs a new block).
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
        group = int(sys.argv[3])  # messages stored at once: one group commit
        for number in range(0, 5000, group):  # until the bytes the files have run out
            results = await asyncio.gather(*(
                inbox.store(incoming(f"04lxx{number + index:010d}AAB"))
                for index in range(group)), return_exceptions=True)
            errors = [result for result in results if isinstance(result, Exception)]
            if errors:
                assert all(isinstance(error, InboxError) for error in errors), errors
                print("store failed:", errors[0], flush=True)
                break
        else:
            print("every store went through", flush=True)
        answer = await client.get("/readyz")
        print("after", answer.status_code, answer.text.strip(), flush=True)
    await inbox.close()

asyncio.run(main())
'''


@pytest.mark.parametrize("group", [1, 8])
def test_a_store_on_a_full_disk_fails_naming_the_cause(tmp_path: Path, group: int):
    """One message at a time, or a group of eight in one commit (its rows in one statement,
    which SQLite rolls back with the whole transaction: "no such savepoint" hid the cause)."""
    payload = PAYLOADS / "amplabs-create_account.xml"
    done = subprocess.run([sys.executable, "-c", _FULL_DISK, str(tmp_path), str(payload),
                           str(group)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    lines = done.stdout.splitlines()
    assert "before 200" in lines, done.stdout + done.stderr[-1500:]
    failed = [line for line in lines if line.startswith("store failed:")]
    assert failed, done.stdout
    assert "no transaction is active" not in failed[0], failed[0]
    assert "no such savepoint" not in failed[0], failed[0]


_NOT_READY_WHILE_FULL = r'''
import asyncio, resource, sys
from pathlib import Path
import httpx
from service.app import create_health_app
from service.config import load_config
from service.connections import OpenConnections
from service.logs import configure_logging
from service.server import build_worker_parts, connection_limits, prepare, worker_main_app

folder, payload = Path(sys.argv[1]), Path(sys.argv[2])
configure_logging("json", "info", stream=sys.stderr)
(folder / "omgate.toml").write_text(f"""
[server]
bind = []
plain_bind = ["127.0.0.1:1"]
[client_auth]
mode = "off"
[inbox]
url = "sqlite:///{folder / 'inbox.db'}"
""")

async def main() -> None:
    config = load_config(folder / "omgate.toml", {})
    parts = await build_worker_parts(config, prepare(config))
    app = worker_main_app(parts, OpenConnections(connection_limits(config, 100)))
    health = create_health_app(parts.inbox, parts.state, parts.metrics)
    number = 0

    async def post(client: httpx.AsyncClient) -> httpx.Response:
        nonlocal number
        number += 1
        body = payload.read_bytes().replace(b"04lxx000000CaSdAAK",
                                            f"04lxx{number:010d}AAB".encode())
        return await client.post("/salesforce/outbound", content=body,
                                 headers={"Content-Type": "text/xml; charset=utf-8"})

    async with (httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=("127.0.0.1", 9)),
                                  base_url="http://127.0.0.1") as client,
                httpx.AsyncClient(transport=httpx.ASGITransport(app=health),
                                  base_url="http://health") as checks):
        print("stored", (await post(client)).status_code, flush=True)
        print("before", (await checks.get("/readyz")).status_code, flush=True)
        limits = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, limits[1]))  # the disk is full
        for _ in range(5000):
            answer = await post(client)
            if answer.status_code != 200:
                print("refused", answer.status_code, flush=True)
                break
        ready = await checks.get("/readyz")
        print("full", ready.status_code, ready.text.strip(), flush=True)
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)  # room again
        print("stored again", (await post(client)).status_code, flush=True)
        print("after", (await checks.get("/readyz")).status_code, flush=True)
    await parts.inbox.close()
    parts.gate.close()

asyncio.run(main())
'''


def test_a_worker_whose_stores_fail_on_a_full_disk_is_not_ready_until_one_succeeds(
        tmp_path: Path):
    """/readyz took a write transaction and rolled it back, which a full disk lets through:
    it answered 200 while every message was refused with a 500. A store that fails for its
    storage's sake now makes the worker not ready (the reason on the health listener), and
    the next store that succeeds makes it ready again."""
    payload = PAYLOADS / "amplabs-create_account.xml"
    done = subprocess.run([sys.executable, "-c", _NOT_READY_WHILE_FULL, str(tmp_path),
                           str(payload)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    lines = done.stdout.splitlines()
    assert lines[:2] == ["stored 200", "before 200"], done.stdout + done.stderr[-1500:]
    assert "refused 500" in lines, done.stdout + done.stderr[-1500:]
    [full] = [line for line in lines if line.startswith("full ")]
    assert full.startswith("full 503 inbox store failed: "), full
    assert "disk" in full or "I/O" in full, full
    assert lines[-2:] == ["stored again 200", "after 200"], done.stdout
