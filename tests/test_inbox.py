"""The inbox contract, run against each backend (SQLite now)."""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import PAYLOADS, break_writes

from service.inbox import Inbox, InboxError, IncomingMessage, open_inbox
from service.soap import parse_message

NOW = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)


def run(coroutine):
    return asyncio.run(coroutine)


class SyncInbox:
    """Drive an async inbox from plain tests, on one event loop."""

    def __init__(self, url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.inbox: Inbox = self.loop.run_until_complete(open_inbox(url))

    def __getattr__(self, name: str):
        method = getattr(self.inbox, name)
        return lambda *args, **kwargs: self.loop.run_until_complete(method(*args, **kwargs))

    def shutdown(self) -> None:
        self.loop.run_until_complete(self.inbox.close())
        self.loop.close()


@pytest.fixture
def sqlite_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "inbox.db"


@pytest.fixture
def inbox(sqlite_path: Path) -> Iterator[SyncInbox]:
    opened = SyncInbox(f"sqlite:///{sqlite_path}")
    yield opened
    opened.shutdown()


def incoming(name: str, *, keep_session_id: bool = False, body: bytes | None = None,
             endpoint: str = "/salesforce/outbound") -> IncomingMessage:
    message = parse_message(body or (PAYLOADS / name).read_bytes())
    return IncomingMessage(message, endpoint, NOW, keep_session_id)


def test_store_then_read_back_everything(inbox):
    result = inbox.store(incoming("amplabs-batch_update_contacts.xml"))
    assert (result.new, result.duplicates) == (3, 0)
    stored = inbox.list(limit=10)
    assert [item.notification_id for item in stored] == [
        "04lxx000000CaSeAAK", "04lxx000000CaSfAAK", "04lxx000000CaSgAAK"]
    first = stored[0].to_json()
    assert first["organization_id"] == "00Dxx0000001gPFEAY"
    assert first["action_id"] == "04kxx00000000blBAA"
    assert first["sobject_type"] == "Contact"
    assert first["record_id"] == "003xx000004TmiQAAS"
    assert first["fields"]["CreatedDate"] == "2026-08-26T23:25:15.000Z"
    assert first["received_at"] == NOW.isoformat()
    assert "session_id" not in first
    assert inbox.get(stored[1].id).notification_id == "04lxx000000CaSfAAK"
    assert inbox.get(9999) is None
    assert [item.id for item in inbox.list(limit=10, after_id=stored[0].id)] == [
        stored[1].id, stored[2].id]


def test_redelivery_is_counted_as_duplicate_and_not_stored_twice(inbox):
    inbox.store(incoming("amplabs-batch_update_contacts.xml"))
    again = inbox.store(incoming("amplabs-batch_update_contacts.xml"))
    assert (again.new, again.duplicates) == (0, 3)
    assert len(inbox.list(limit=10)) == 3


def test_fifteen_and_eighteen_character_forms_are_one_key(inbox):
    body = (PAYLOADS / "amplabs-create_account.xml").read_bytes()
    inbox.store(incoming("", body=body))
    short_org = body.replace(b"00Dxx0000001gPFEAY", b"00Dxx0000001gPF")
    short_both = short_org.replace(b"<Id>04lxx000000CaSdAAK", b"<Id>04lxx000000CaSd")
    assert inbox.store(incoming("", body=short_both)).duplicates == 1


def test_same_notification_id_in_another_org_is_new(inbox):
    body = (PAYLOADS / "amplabs-create_account.xml").read_bytes()
    inbox.store(incoming("", body=body))
    other = body.replace(b"00Dxx0000001gPFEAY", b"00Dyy0000001gPFEAY")
    assert inbox.store(incoming("", body=other)).new == 1


def test_typed_fields_keep_their_json_types(inbox):
    from harness import WSDLS
    from messages import message_for

    from service.soap import load_wsdl

    schema = load_wsdl(WSDLS / "gwestersf-Shipment__c.wsdl")
    body, _ = message_for(schema)
    message = parse_message(body, schema)
    inbox.store(IncomingMessage(message, "/typed", NOW))
    fields = inbox.list(limit=1)[0].fields
    assert fields["gwestr__Weight__c"] == 12.5
    assert fields["gwestr__Rush__c"] is True
    assert fields["gwestr__Scheduled_Delivery__c"] == "2024-02-29"
    assert fields["CreatedDate"] == "2024-02-29T13:45:00+00:00"


def test_session_id_is_stored_only_when_asked(inbox):
    inbox.store(incoming("aspnet-contacts-2.xml"))
    assert inbox.list(limit=1)[0].session_id is None
    body = (PAYLOADS / "aspnet-contacts-2.xml").read_bytes().replace(b"04l1I", b"04l2I")
    inbox.store(incoming("", body=body, keep_session_id=True))
    kept = inbox.list(limit=10)[-1]
    assert kept.session_id is not None and kept.session_id.startswith("00D1I000003qqqE!")


def test_sqlite_runs_in_wal_mode_with_full_sync(inbox, sqlite_path):
    inbox.check_writable()
    connection = sqlite3.connect(sqlite_path)
    assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    connection.close()
    assert inbox.inbox._connection.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_a_failed_message_stores_none_of_its_notifications(inbox, sqlite_path):
    inbox.store(incoming("amplabs-create_account.xml"))
    connection = sqlite3.connect(sqlite_path)
    connection.execute(  # fails on the third notification, after two inserts succeeded
        "CREATE TRIGGER fail BEFORE INSERT ON notifications "
        "WHEN NEW.notification_id = '04lxx000000CaSgAAK' "
        "BEGIN SELECT RAISE(ABORT, 'disk trouble'); END")
    connection.commit()
    connection.close()
    with pytest.raises(InboxError, match="disk trouble"):
        inbox.store(incoming("amplabs-batch_update_contacts.xml"))
    assert [item.notification_id for item in inbox.list(limit=10)] == ["04lxx000000CaSdAAK"]


def test_unwritable_inbox_is_reported(inbox, sqlite_path):
    inbox.check_writable()
    break_writes(sqlite_path, "heartbeat", "disk is read-only")
    with pytest.raises(InboxError, match="disk is read-only"):
        inbox.check_writable()


def test_newer_schema_is_refused(sqlite_path):
    opened = SyncInbox(f"sqlite:///{sqlite_path}")
    opened.shutdown()
    connection = sqlite3.connect(sqlite_path)
    connection.execute("PRAGMA user_version=99")
    connection.close()
    with pytest.raises(InboxError, match="newer"):
        SyncInbox(f"sqlite:///{sqlite_path}")


def test_unknown_url_is_refused():
    with pytest.raises(InboxError, match="unsupported inbox URL"):
        run(open_inbox("mysql://localhost/x"))
