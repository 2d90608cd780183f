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
