"""/readyz against a flood: every public listener answers it without a client certificate,
and each check takes the inbox's write lock, so a worker checks at most once a second and
callers meanwhile share that answer."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import httpx
import pytest

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


def test_a_store_that_failed_for_its_storages_sake_holds_readiness_off_for_a_while(
        tmp_path: Path, monkeypatch):
    """A store refused for its message's sake (a poison message Salesforce sends again and
    again) leaves the worker ready; one refused because the storage failed makes it not
    ready until a store succeeds, or STORE_FAILURE_HOLD_SECONDS after the last such
    failure, when the write check decides again."""
    monkeypatch.setattr(app_module, "STORE_FAILURE_HOLD_SECONDS", 0.3)

    async def scenario() -> list[str | None]:
        inbox = await open_inbox(f"sqlite:///{tmp_path / 'inbox.db'}")
        readiness = app_module.InboxReadiness()
        seen = [await readiness.problem_now(inbox)]
        readiness.store_failed(InboxError("a value the database refuses"))
        seen.append(await readiness.problem_now(inbox))
        readiness.store_failed(InboxError("database or disk is full", storage=True))
        seen.append(await readiness.problem_now(inbox))
        readiness.store_succeeded()
        seen.append(await readiness.problem_now(inbox))
        readiness.store_failed(InboxError("disk I/O error", storage=True))
        seen.append(await readiness.problem_now(inbox))
        await asyncio.sleep(0.35)
        seen.append(await readiness.problem_now(inbox))
        await inbox.close()
        return seen

    assert asyncio.run(scenario()) == [None, None, "inbox store failed: database or disk is full",
                                       None, "inbox store failed: disk I/O error", None]


def test_sqlite_errors_of_the_storage_are_told_from_errors_of_the_statement(tmp_path: Path):
    from service.inbox.sqlite_database import SqliteDatabase

    database = SqliteDatabase(tmp_path / "inbox.db", busy_timeout_ms=0)
    holder = sqlite3.connect(tmp_path / "inbox.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    waiter = sqlite3.connect(tmp_path / "inbox.db", isolation_level=None, timeout=0)
    with pytest.raises(sqlite3.OperationalError) as busy:
        waiter.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.OperationalError) as statement:
        waiter.execute("SELECT * FROM no_such_table")
    holder.rollback()
    assert database._error(busy.value).storage
    assert not database._error(statement.value).storage


def test_postgresql_errors_of_the_server_are_told_from_errors_of_the_statement():
    import psycopg
    from psycopg import errors
    from psycopg_pool import PoolTimeout

    from service.inbox.postgres_database import storage_failed

    failing = [errors.DiskFull("no space left on device"), errors.AdminShutdown("shutdown"),
               errors.ReadOnlySqlTransaction("read-only"), errors.IoError("read failed"),
               psycopg.OperationalError("connection refused"), PoolTimeout("no connection")]
    refusing = [errors.UniqueViolation("duplicate"), errors.CharacterNotInRepertoire("NUL"),
                errors.LockNotAvailable("lock timeout"), errors.ProgramLimitExceeded("big"),
                psycopg.DataError("bad value")]
    assert [storage_failed(error) for error in failing] == [True] * len(failing)
    assert [storage_failed(error) for error in refusing] == [False] * len(refusing)
