"""/readyz against a flood: every public listener answers it without a client certificate,
and each check takes the inbox's write lock, so a worker checks at most once a second and
callers meanwhile share that answer."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from service import app as app_module
from service.app import ServiceState, create_health_app
from service.inbox import InboxError, open_inbox
from service.metrics import Metrics


def test_a_flood_of_readiness_checks_takes_the_write_lock_once_a_second(tmp_path: Path,
                                                                         monkeypatch):
    monkeypatch.setattr(app_module, "READINESS_FRESH_SECONDS", 0.3, raising=False)

    async def scenario() -> tuple[list[int], int, list[int], int, str]:
        inbox = await open_inbox(f"sqlite:///{tmp_path / 'inbox.db'}")
        check, checks, broken = inbox.check_writable, [], []

        async def counted() -> None:
            checks.append(1)
            await asyncio.sleep(0.05)  # a write transaction takes a while
            if broken:
                raise InboxError("database or disk is full")
            await check()

        inbox.check_writable = counted  # type: ignore[method-assign]
        app = create_health_app(inbox, ServiceState(), Metrics())
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://health") as client:
            flood = await asyncio.gather(*(client.get("/readyz") for _ in range(200)))
            during = len(checks)
            await asyncio.sleep(0.35)
            broken.append(1)
            later = await asyncio.gather(*(client.get("/readyz") for _ in range(50)))
            answer = later[0].text
        await inbox.close()
        return ([r.status_code for r in flood], during, [r.status_code for r in later],
                len(checks), answer)

    flood, during, later, checks, answer = asyncio.run(scenario())
    assert flood == [200] * 200
    assert during == 1, f"{during} write checks for 200 /readyz at once"
    assert later == [503] * 50 and checks == 2  # checked again once it was a second old
    assert answer == "inbox not writable: database or disk is full\n"
