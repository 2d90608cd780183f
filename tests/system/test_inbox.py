"""The inbox contract, run against each backend: SQLite and a real PostgreSQL."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import datetime as dt
import fcntl
import os
import sqlite3
import threading
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from harness import PAYLOADS, break_writes, is_ack
from messages import envelope, notification

from service.inbox import DEAD, DELIVERED, PENDING, Inbox, InboxError, IncomingMessage, open_inbox
from service.inbox.migrations import SCHEMA_VERSION
from service.inbox.sqlite import SqliteInbox
from service.soap import parse_message

NOW = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)
BACKENDS = ["sqlite", "postgresql"]


class SyncInbox:
    """Drive an async inbox from plain tests, on one event loop."""

    def __init__(self, url: str, group_commit: bool = True) -> None:
        self.loop = asyncio.new_event_loop()
        self.inbox: Inbox = self.loop.run_until_complete(open_inbox(url,
                                                                    group_commit=group_commit))

    def __getattr__(self, name: str):
        method = getattr(self.inbox, name)
        return lambda *args, **kwargs: self.loop.run_until_complete(method(*args, **kwargs))

    def concurrently(self, incomings: list[IncomingMessage]) -> list:
        async def all_of() -> list:
            return await asyncio.gather(*(self.inbox.store(i) for i in incomings),
                                        return_exceptions=True)

        return self.loop.run_until_complete(all_of())

    def shutdown(self) -> None:
        self.loop.run_until_complete(self.inbox.close())
        self.loop.close()


@pytest.fixture(params=BACKENDS)
def inbox_url(request, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'data' / 'inbox.db'}"
    return request.getfixturevalue("postgres").new_database()


@pytest.fixture
def inbox(inbox_url: str) -> Iterator[SyncInbox]:
    opened = SyncInbox(inbox_url)
    yield opened
    opened.shutdown()


def incoming(name: str, *, keep_session_id: bool = False, body: bytes | None = None,
             endpoint: str = "/salesforce/outbound", at: dt.datetime = NOW) -> IncomingMessage:
    message = parse_message(body or (PAYLOADS / name).read_bytes())
    return IncomingMessage(message, endpoint, at, keep_session_id)


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
    assert dt.datetime.fromisoformat(first["received_at"]) == NOW
    assert first["state"] == PENDING and first["attempts"] == 0
    assert "session_id" not in first
    assert inbox.get(stored[1].id).notification_id == "04lxx000000CaSfAAK"
    assert inbox.get(999999) is None
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
    inbox.store(IncomingMessage(parse_message(body, schema), "/typed", NOW))
    fields = inbox.list(limit=1)[0].fields
    assert fields["gwestr__Weight__c"] == 12.5
    assert fields["gwestr__Rush__c"] is True
    assert fields["gwestr__Scheduled_Delivery__c"] == "2024-02-29"
    assert fields["CreatedDate"] == "2024-02-29T13:45:00+00:00"


def test_a_new_rows_digest_is_the_one_its_stored_form_gives():
    """row_values digests the field values without decoding the JSON it just encoded; the
    digest must be what content_digest gives the row as stored (and read back)."""
    import math
    from decimal import Decimal

    from service.inbox.encoding import content_digest, row_values

    message = contact("Jeraldine").message
    typed = {"Weight": 12.5, "Rush": True, "Count": 3, "Price": Decimal("10.50"),
             "Due": dt.date(2024, 2, 29), "At": dt.datetime(2024, 2, 29, 13, 45, tzinfo=dt.UTC),
             "Alarm": dt.time(7, 30), "Ratio": math.nan, "Big": 10**30, "Empty": None,
             "Name": "Zoë \u2028\x01\"quoted\"", "Address": {"City": "Köln", "Zip": "50667"}}
    notification = dataclasses.replace(message.notifications[0], fields=typed)
    typed_message = dataclasses.replace(message, notifications=(notification,))
    [row] = row_values(IncomingMessage(typed_message, "/salesforce/outbound", NOW))
    assert row["content_sha256"] == content_digest(row)


def test_what_a_store_binds_once_a_message_is_the_same_in_each_of_its_rows():
    """SQLite binds MESSAGE_COLUMNS once for all of a message's rows: a column that can
    differ between two notifications of one message must not be among them."""
    from service.inbox.encoding import row_values
    from service.inbox.statements import INSERT_COLUMNS, MESSAGE_COLUMNS, NOTIFICATION_COLUMNS

    body = envelope(notification("04l000000000001AAA", "<sf:Name>a</sf:Name>"),
                    notification("04l000000000002AAA", "<sf:Name>b</sf:Name>",
                                 sobject_attrs='xsi:type="sf:Contact"',
                                 record_id="003000000000002AAA"))
    rows = row_values(IncomingMessage(parse_message(body), "/salesforce/outbound", NOW,
                                      chain_sha256="ab" * 32))
    differing = {name for name in INSERT_COLUMNS if rows[0][name] != rows[1][name]}
    assert differing == set(NOTIFICATION_COLUMNS)
    assert not differing & set(MESSAGE_COLUMNS)
    assert sorted((*MESSAGE_COLUMNS, *NOTIFICATION_COLUMNS)) == sorted(INSERT_COLUMNS)


def test_fields_and_digests_are_json_dumps_text_whoever_writes_them():
    """Plain values are written by orjson: the text must be json.dumps's, byte for byte (a
    digest of it is compared with those stored by earlier versions)."""
    import json

    from service.inbox.encoding import _json

    texts = [chr(code) for code in range(128)] + [
        "\u0080", "\u009b", "Zoë", "\u2028", "\u202e", "\ufeff", "日本", "\U0001f600"]
    for text in texts:
        value = {f"k{text}": f"a{text}b", "n": None, "t": True, "i": -(2**63),
                 "nested": {"z": text, "a": 2**64}}
        for sort_keys in (False, True):
            assert _json(value, sort_keys=sort_keys) == json.dumps(
                value, ensure_ascii=False, separators=(",", ":"), sort_keys=sort_keys)


def test_session_id_is_stored_only_when_asked(inbox):
    inbox.store(incoming("aspnet-contacts-2.xml"))
    assert inbox.list(limit=1)[0].session_id is None
    body = (PAYLOADS / "aspnet-contacts-2.xml").read_bytes().replace(b"04l1I", b"04l2I")
    inbox.store(incoming("", body=body, keep_session_id=True))
    kept = inbox.list(limit=10)[-1]
    assert kept.session_id is not None and kept.session_id.startswith("00D1I000003qqqE!")


def unique_message(index: int, record: str = "001xx000003DGb2AAG") -> IncomingMessage:
    body = envelope(notification(f"04l{index:012d}AAA", record_id=record))
    return IncomingMessage(parse_message(body), "/salesforce/outbound", NOW)


def test_a_page_of_the_list_reads_none_of_the_notifications_fields(inbox):
    """The console's list shows ids, times, states and errors: each page decoded every
    field of every row it listed (an attacker's review: 88 MB for 50 large ones)."""
    fields = "".join(f"<sf:F{i}>v</sf:F{i}>" for i in range(20_000))
    for index in range(20):
        body = envelope(notification(f"04l{index:012d}AAA", fields=fields))
        inbox.store(IncomingMessage(parse_message(body), "/salesforce/outbound", NOW))
    tracemalloc.start()
    try:
        rows = inbox.recent(limit=20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(rows) == 20 and rows[0].notification_id == "04l000000000019AAA"
    assert peak < 4_000_000, f"a page of 20 held {peak} bytes"


@pytest.mark.parametrize("group_commit", [True, False])
def test_concurrent_stores_each_get_their_own_answer(inbox_url, group_commit):
    opened = SyncInbox(inbox_url, group_commit=group_commit)
    try:
        batch = [unique_message(i) for i in range(40)] + [unique_message(3)]
        results = opened.concurrently(batch)
        assert [r.new for r in results[:40]] == [1] * 40
        assert (results[40].new, results[40].duplicates) == (0, 1)
        assert len(opened.list(limit=100)) == 40
    finally:
        opened.shutdown()


def test_a_group_commit_stores_each_message_whole_and_tells_each_its_result(inbox_url):
    """A group of messages is written in one statement when every notification is new; a
    redelivery inside the group (the same notification, other content) sends them one by
    one instead, so each still learns what became of its own."""
    opened = SyncInbox(inbox_url, group_commit=True)
    try:
        several = incoming("amplabs-batch_update_contacts.xml")
        fresh = opened.concurrently([unique_message(1), several, unique_message(2)])
        assert [result.new for result in fresh] == [1, len(several.message.notifications), 1]
        assert all(result.duplicates == 0 and not result.conflicts for result in fresh)
        redelivered = "04l000000000009AAA"
        mixed = opened.concurrently([contact("Jeraldine", notification_id=redelivered),
                                     unique_message(3),
                                     contact("Mallory", notification_id=redelivered),
                                     unique_message(4), unique_message(1)])
        assert [(result.new, result.duplicates, len(result.conflicts))
                for result in mixed] == [(1, 0, 0), (1, 0, 0), (0, 0, 1), (1, 0, 0), (0, 1, 0)]
        stored = opened.list(limit=100)
        assert [item.notification_id for item in stored] == [
            "04l000000000001AAA", *(n.id for n in several.message.notifications),
            "04l000000000002AAA", redelivered, "04l000000000003AAA", "04l000000000004AAA"]
        assert stored[-3].fields["FirstName"] == "Jeraldine"  # the first content is kept
    finally:
        opened.shutdown()


def numbered_message(numbers: list[int]) -> IncomingMessage:
    """A notification for each number, its ID, record and a field naming the number."""
    body = envelope(*(notification(f"04l{number:012d}AAA", f"<sf:Name>n{number}</sf:Name>",
                                   record_id=f"001{number:012d}AAA") for number in numbers))
    return IncomingMessage(parse_message(body), "/salesforce/outbound", NOW)


@pytest.mark.parametrize("count", [2, 3, 63, 64, 65, 100])
def test_every_notification_of_a_message_is_stored_in_its_order_with_its_own_values(
        inbox_url, count):
    """A message's rows are written by a few statements of many rows each (SQLite): each
    row keeps its own notification's values and the message's, in the message's order,
    whatever the number of rows; a notification stored before, or twice in the message,
    is a duplicate, and the others are stored still."""
    opened = SyncInbox(inbox_url, group_commit=True)
    try:
        first = list(range(1000, 1000 + count))
        group = opened.concurrently([numbered_message(first), unique_message(1)])
        assert [(result.new, result.duplicates) for result in group] == [(count, 0), (1, 0)]
        twice = list(range(2000, 2000 + count - 1))
        alone = opened.store(numbered_message([*twice, twice[0]]))
        assert (alone.new, alone.duplicates) == (count - 1, 1)
        later = list(range(3000, 3000 + count - 1))
        again = opened.store(numbered_message([first[-1], *later]))
        assert (again.new, again.duplicates) == (count - 1, 1)
        stored = opened.list(limit=1000)
        expected = [*first, None, *twice, *later]
        assert [item.notification_id for item in stored] == [
            "04l000000000001AAA" if number is None else f"04l{number:012d}AAA"
            for number in expected]
        for item, number in zip(stored, expected, strict=True):
            if number is not None:
                assert item.fields["Name"] == f"n{number}"
                assert item.record_id == f"001{number:012d}AAA"
            assert (item.organization_id, item.action_id, item.endpoint) == (
                "00Dxx0000001gPFEAY", "04kxx00000000blAAA", "/salesforce/outbound")
            assert dt.datetime.fromisoformat(item.received_at) == NOW
    finally:
        opened.shutdown()


def test_claims_keep_each_records_order_and_lease(inbox):
    inbox.prepare_delivery()  # as a delivery worker does first
    for index, record in enumerate(["001A00000000001AAA", "001A00000000001AAA",
                                    "001B00000000001AAA", None]):
        inbox.store(unique_message(index, record=record))
    first = inbox.claim(limit=10, lease_seconds=60, now=NOW)
    assert [n.notification_id[3:15] for n in first] == ["000000000000", "000000000002",
                                                        "000000000003"]
    assert inbox.claim(limit=10, lease_seconds=60, now=NOW) == []  # all leased
    inbox.mark_delivered(first[0].id, NOW)
    inbox.mark_failed(first[1].id, "HTTP 500", retry_at=NOW + dt.timedelta(minutes=5), now=NOW)
    inbox.mark_delivered(first[2].id, NOW)
    soon = NOW + dt.timedelta(seconds=1)
    [second] = inbox.claim(limit=10, lease_seconds=60, now=soon)
    assert second.notification_id[3:15] == "000000000001"  # record A's next state
    inbox.mark_delivered(second.id, soon)
    assert inbox.claim(limit=10, lease_seconds=60, now=soon) == []  # the retry is not due
    later = NOW + dt.timedelta(minutes=6)
    [retried] = inbox.claim(limit=10, lease_seconds=60, now=later)
    assert retried.notification_id[3:15] == "000000000002"
    assert (retried.attempts, retried.last_error) == (1, "HTTP 500")
    assert inbox.claim(limit=10, lease_seconds=60, now=later) == []  # leased
    lease_over = later + dt.timedelta(minutes=2)  # the worker holding it died
    assert [n.id for n in inbox.claim(limit=10, lease_seconds=60, now=lease_over)] == [
        retried.id]


def test_dead_letters_unblock_the_record_and_can_be_retried(inbox):
    inbox.prepare_delivery()  # as a delivery worker does first
    inbox.store(unique_message(1, record="001A00000000001AAA"))
    inbox.store(unique_message(2, record="001A00000000001AAA"))
    [older] = inbox.claim(limit=10, lease_seconds=60, now=NOW)
    inbox.mark_failed(older.id, "gave up", retry_at=None, now=NOW)
    [newer] = inbox.claim(limit=10, lease_seconds=60, now=NOW)
    assert newer.id != older.id
    assert [n.state for n in inbox.list(limit=10, state=DEAD)] == [DEAD]
    stats = inbox.stats()
    assert (stats.pending, stats.dead) == (1, 1)
    assert stats.oldest_pending_received_at == NOW
    assert inbox.retry(None, NOW) == 1
    assert inbox.list(limit=10, state=DEAD) == []
    inbox.mark_delivered(newer.id, NOW)
    assert [n.notification_id for n in inbox.list(limit=10, state=DELIVERED)] == [
        newer.notification_id]
    assert inbox.retry(newer.id, NOW) == 1
    assert inbox.retry(424242, NOW) == 0


def test_a_notification_under_delivery_is_not_retried_until_its_lease_ends(inbox):
    """Retry (the console's button, `omgate inbox retry ID`) on a notification a worker has
    claimed cleared its lease: the next claim handed it out again while its first attempt
    still ran, two attempts at once for one record."""
    inbox.store(unique_message(1, record="001A00000000001AAA"))
    [claimed] = inbox.claim(limit=10, lease_seconds=60, now=NOW)
    assert inbox.retry(claimed.id, NOW) == 0
    assert inbox.claim(limit=10, lease_seconds=60, now=NOW) == []  # still leased
    lease_over = NOW + dt.timedelta(seconds=61)
    assert inbox.retry(claimed.id, lease_over) == 1  # a worker that died: tried again now
    assert [n.id for n in inbox.claim(limit=10, lease_seconds=60, now=lease_over)] == [
        claimed.id]


def test_pages_of_recent_notifications_are_read_by_id_with_their_counts(inbox):
    """The console pages through the inbox: at most a page per read (LIMIT, by id on either
    side of the page's edge), with the counts that say where the page is."""
    for index in range(12):
        inbox.store(unique_message(index, record=f"001A0000000{index:04d}AAA"))
    ids = [item.id for item in inbox.recent(limit=100)]
    assert ids == sorted(ids, reverse=True) and len(ids) == 12
    first = inbox.recent(limit=5)
    assert [item.id for item in first] == ids[:5]
    second = inbox.recent(limit=5, before_id=first[-1].id)
    assert [item.id for item in second] == ids[5:10]
    assert [item.id for item in inbox.recent(limit=5, before_id=second[-1].id)] == ids[10:]
    # back up from the second page: the five just above it, still latest first
    assert [item.id for item in inbox.recent(limit=5, after_id=second[0].id)] == ids[:5]
    assert [item.id for item in inbox.recent(limit=3, after_id=second[0].id)] == ids[2:5]
    assert inbox.count() == 12
    assert inbox.count(after_id=second[0].id) == 5  # the page starts at the sixth
    for item in ids[:4]:
        claimed = inbox.get(item)
        inbox.mark_failed(claimed.id, "webhook answered 500", retry_at=None, now=NOW)
    assert inbox.count(state=DEAD) == 4
    assert [item.id for item in inbox.recent(limit=2, state=DEAD, before_id=ids[1])] == ids[2:4]
    wanted = inbox.get(ids[3])
    assert [item.id for item in inbox.recent(limit=10, state=DEAD, key=wanted.record_id)] == [
        ids[3]]
    assert inbox.count(state=DEAD, key=wanted.notification_id[:15]) == 1


def test_a_notification_keeps_its_delivery_history_and_its_chain(inbox):
    """Each attempt, the last one, and an operator's retry are events of the notification
    (the console's page of it); its client chain is stored with it."""
    message = unique_message(1)
    inbox.store(dataclasses.replace(message, chain_sha256="ab" * 32))
    inbox.store(unique_message(2))
    stored, other = sorted(inbox.list(limit=10), key=lambda item: item.id)
    assert (stored.chain_sha256, other.chain_sha256) == ("ab" * 32, None)
    assert "chain_sha256" not in stored.to_json()  # the JSON tools print is unchanged
    minute = dt.timedelta(minutes=1)
    inbox.mark_failed(stored.id, "webhook answered 500", retry_at=NOW + minute, now=NOW)
    inbox.mark_failed(stored.id, "connection refused", retry_at=None, now=NOW + minute)
    inbox.mark_failed(other.id, "connection refused", retry_at=None, now=NOW + minute)
    assert inbox.retry(None, NOW + 2 * minute, through_id=stored.id) == 1  # not the newer
    assert inbox.get(other.id).state == DEAD
    inbox.mark_delivered(stored.id, NOW + 3 * minute)
    inbox.mark_delivered(424242, NOW)  # no such notification: no event either
    events = inbox.events(stored.id, limit=10)
    assert [(event.kind, event.error) for event in events] == [
        ("failed", "webhook answered 500"), ("dead", "connection refused"), ("retried", None),
        ("delivered", None)]
    assert [event.at for event in events] == [NOW + n * minute for n in range(4)]
    assert [event.kind for event in inbox.events(stored.id, limit=2)] == ["retried",
                                                                          "delivered"]
    assert inbox.events(424242, limit=10) == []


def test_decisions_are_counted_per_hour_and_endpoint(inbox):
    from service.inbox.chains import LISTENER, HourCount

    hour = NOW.replace(minute=0)
    inbox.record_chains([], [HourCount(hour, LISTENER, "accept", 3),
                             HourCount(hour, "/salesforce/outbound", "reject", 2),
                             HourCount(hour - dt.timedelta(hours=30), LISTENER, "accept", 1)])
    inbox.record_chains([], [HourCount(hour, LISTENER, "accept", 4)])
    assert inbox.decision_hours(hour - dt.timedelta(hours=1), 100) == [
        HourCount(hour, LISTENER, "accept", 7),
        HourCount(hour, "/salesforce/outbound", "reject", 2)]
    assert len(inbox.decision_hours(hour - dt.timedelta(days=2), 100)) == 3
    assert len(inbox.decision_hours(hour - dt.timedelta(days=2), 2)) == 2
    assert inbox.decisions_since(hour) == {"accept": 7, "reject": 2}


def test_a_version_5_inbox_keeps_its_decision_counts_as_the_listeners(inbox_url):
    from service.inbox.chains import LISTENER, HourCount

    hour = NOW.replace(minute=0)
    write_version_5_inbox(inbox_url, hour)
    opened = SyncInbox(inbox_url)
    try:
        assert opened.decision_hours(hour - dt.timedelta(hours=1), 10) == [
            HourCount(hour, LISTENER, "would_reject", 5)]
        opened.record_chains([], [HourCount(hour, "/x", "would_reject", 1)])
        assert opened.decisions_since(hour) == {"would_reject": 6}
    finally:
        opened.shutdown()


def write_version_5_inbox(url: str, hour: dt.datetime) -> None:
    """An inbox as omgate left it before it counted decisions per endpoint."""
    insert = ("INSERT INTO client_auth_hours (hour, outcome, connections) "
              "VALUES ({}, 'would_reject', 5)")
    if url.startswith("sqlite:///"):
        from service.inbox.sqlite_database import MIGRATIONS, timestamp

        path = Path(url[len("sqlite:///"):])
        path.parent.mkdir(parents=True)
        connection = sqlite3.connect(path)
        for step in range(1, 6):
            for statement in MIGRATIONS[step]:
                connection.execute(statement)
        connection.execute(insert.format("?"), (timestamp(hour),))
        connection.execute("PRAGMA user_version=5")
        connection.commit()
        connection.close()
        return
    import psycopg

    from service.inbox.postgres_database import MIGRATIONS

    with psycopg.connect(url) as connection:
        for step in range(1, 6):
            for statement in MIGRATIONS[step]:
                connection.execute(statement)
        connection.execute("CREATE TABLE omgate_schema (version INTEGER NOT NULL)")
        connection.execute("INSERT INTO omgate_schema VALUES (5)")
        connection.execute(insert.format("%s"), (hour,))


def contact(first_name: str, *, notification_id: str = "04l000000000001AAA",
            record_id: str = "003xx000004TmiQAAS", endpoint: str = "/salesforce/outbound",
            extra: str = "", at: dt.datetime = NOW, session_id: str | None = None
            ) -> IncomingMessage:
    fields = f"<sf:FirstName>{first_name}</sf:FirstName><sf:LastName>Black</sf:LastName>"
    body = envelope(notification(notification_id, fields + extra, record_id=record_id,
                                 sobject_attrs='xsi:type="sf:Contact"'))
    if session_id is not None:
        body = body.replace(b'<SessionId xsi:nil="true"/>',
                            f"<SessionId>{session_id}</SessionId>".encode())
    return IncomingMessage(parse_message(body), endpoint, at)


def test_a_redelivery_that_differs_is_acknowledged_as_a_conflict_and_kept_apart(inbox):
    assert inbox.store(contact("Jeraldine")).new == 1
    [stored] = inbox.list(limit=10)
    assert stored.content_sha256 and stored.conflicts == 0
    # the same content, sent again later and with a SessionId
    same = inbox.store(contact("Jeraldine", session_id="00D!x", at=NOW + dt.timedelta(hours=1)))
    assert (same.new, same.duplicates, same.conflicts) == (0, 1, ())

    other = inbox.store(contact("Mallory", at=NOW + dt.timedelta(hours=2)))
    assert (other.new, other.duplicates) == (0, 0)
    [conflict] = other.conflicts
    assert conflict.inbox_id == stored.id
    assert conflict.notification_id == "04l000000000001AAA"
    assert conflict.stored_sha256 == stored.content_sha256
    assert conflict.redelivered_sha256 != stored.content_sha256
    for changed in (contact("Jeraldine", endpoint="/elsewhere"),
                    contact("Jeraldine", record_id="003xx000004TmiRAAS"),
                    contact("Jeraldine", extra="<sf:Title>White</sf:Title>")):
        assert len(inbox.store(changed).conflicts) == 1
    assert inbox.store(contact("Jeraldine")).duplicates == 1  # still compared with the first

    [kept] = inbox.list(limit=10)
    assert kept.fields == {"Id": "003xx000004TmiQAAS", "FirstName": "Jeraldine",
                           "LastName": "Black"}  # the first content stays
    assert (kept.content_sha256, kept.conflicts) == (stored.content_sha256, 4)
    first, *rest = inbox.conflicts(stored.id)
    assert first.content_sha256 == conflict.redelivered_sha256
    assert first.fields["FirstName"] == "Mallory"
    assert dt.datetime.fromisoformat(first.received_at) == NOW + dt.timedelta(hours=2)
    assert [item.endpoint for item in rest] == ["/elsewhere", "/salesforce/outbound",
                                                "/salesforce/outbound"]
    assert "session_id" not in first.to_json()

    inbox.store(contact("Doug", notification_id="04l000000000002AAA"))
    assert [item.id for item in inbox.list(limit=10, conflicted=True)] == [stored.id]
    assert len(inbox.list(limit=10)) == 2
    assert inbox.conflicts(stored.id + 1) == []


V2_COLUMNS = ("org_key", "notification_key", "organization_id", "action_id",
              "notification_id", "sobject_type", "record_id", "record_key", "fields",
              "endpoint", "received_at", "next_attempt_at")


def version_2_insert(placeholder: str) -> str:
    values = ", ".join(placeholder.format(name) for name in V2_COLUMNS)
    return f"INSERT INTO notifications ({', '.join(V2_COLUMNS)}) VALUES ({values})"  # noqa: S608


def write_version_2_inbox(url: str, row: dict) -> None:
    """An inbox as omgate left it before it kept content digests, holding ``row``."""
    values = {**row, "next_attempt_at": row["received_at"]}
    if url.startswith("sqlite:///"):
        from service.inbox.sqlite_database import MIGRATIONS, timestamp

        values["received_at"] = values["next_attempt_at"] = timestamp(row["received_at"])
        path = Path(url[len("sqlite:///"):])
        path.parent.mkdir(parents=True)
        connection = sqlite3.connect(path)
        for statement in (*MIGRATIONS[1], *MIGRATIONS[2]):
            connection.execute(statement)
        connection.execute(version_2_insert(":{}"), values)
        connection.execute("PRAGMA user_version=2")
        connection.commit()
        connection.close()
        return
    import psycopg

    from service.inbox.postgres_database import MIGRATIONS

    with psycopg.connect(url) as connection:
        for statement in (*MIGRATIONS[1], *MIGRATIONS[2]):
            connection.execute(statement)
        connection.execute("CREATE TABLE omgate_schema (version INTEGER NOT NULL)")
        connection.execute("INSERT INTO omgate_schema VALUES (2)")
        connection.execute(version_2_insert("%({})s"), values)


def test_a_version_2_inbox_gets_digests_and_its_rows_are_compared_too(inbox_url):
    from service.inbox.encoding import row_values

    [row] = row_values(contact("Jeraldine"))
    write_version_2_inbox(inbox_url, row)
    opened = SyncInbox(inbox_url)
    try:
        assert opened.migrate() == SCHEMA_VERSION
        assert record_indexes(inbox_url) == set()  # version 2's is left to delivery
        [old] = opened.list(limit=10)
        assert old.content_sha256 == row["content_sha256"]  # what a store gives it today
        assert opened.store(contact("Jeraldine")).duplicates == 1
        [conflict] = opened.store(contact("Mallory")).conflicts
        assert (conflict.inbox_id, conflict.stored_sha256) == (old.id, row["content_sha256"])
    finally:
        opened.shutdown()


def record_indexes(url: str) -> set[str]:
    """The names of the indexes on the notifications' record key."""
    if url.startswith("sqlite:///"):
        with contextlib.closing(sqlite3.connect(url[len("sqlite:///"):])) as connection:
            return {name for name, sql in connection.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index'")
                if sql and "record_key" in sql}
    import psycopg

    with psycopg.connect(url) as connection:
        return {name for name, sql in connection.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'notifications'")
            if "record_key" in sql}


def claim_plan(url: str) -> str:
    """The backend's plan for a delivery claim (PostgreSQL's as if the table were large)."""
    if url.startswith("sqlite:///"):
        from service.inbox.sqlite import CLAIMABLE

        with contextlib.closing(sqlite3.connect(url[len("sqlite:///"):])) as connection:
            return "\n".join(row[3] for row in connection.execute(
                f"EXPLAIN QUERY PLAN {CLAIMABLE}", {"now": "", "limit": 10}))
    import psycopg

    from service.inbox.postgres import CLAIM

    with psycopg.connect(url) as connection:
        connection.execute("SET enable_seqscan = off")
        return "\n".join(row[0] for row in connection.execute(
            f"EXPLAIN {CLAIM}", {"now": NOW, "limit": 10, "lease": NOW}))


def test_delivery_builds_the_index_its_claims_use_and_stores_never_keep_it_before(inbox_url):
    """A store does not pay for the record index of an inbox nothing delivers from; delivery
    builds it (two replicas may start at once) and its claims look a record up in it."""
    opened, replica = SyncInbox(inbox_url), SyncInbox(inbox_url)
    try:
        assert record_indexes(inbox_url) == set()
        assert "pending_record" not in claim_plan(inbox_url)
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            for started in [pool.submit(each.prepare_delivery) for each in (opened, replica)]:
                started.result()
        opened.prepare_delivery()
        assert record_indexes(inbox_url) == {"notifications_pending_record"}
        assert "notifications_pending_record" in claim_plan(inbox_url)
    finally:
        opened.shutdown()
        replica.shutdown()


def test_migrate_is_idempotent(inbox):
    assert inbox.migrate() == SCHEMA_VERSION
    assert inbox.migrate() == SCHEMA_VERSION


# -- SQLite specifics ----------------------------------------------------------------------

@pytest.fixture
def sqlite_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "inbox.db"


@pytest.fixture
def sqlite_inbox(sqlite_path: Path) -> Iterator[SyncInbox]:
    opened = SyncInbox(f"sqlite:///{sqlite_path}")
    yield opened
    opened.shutdown()


def test_sqlite_timestamps_are_fixed_width_utc_text_that_sorts_as_time():
    from service.inbox.sqlite_database import timestamp

    moments = [dt.datetime(999, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
               dt.datetime(2026, 12, 4, 23, 30, tzinfo=dt.timezone(dt.timedelta(hours=-2))),
               dt.datetime(2026, 12, 5, 0, 0, 0, 1, tzinfo=dt.UTC)]
    texts = [timestamp(moment) for moment in moments]
    assert texts == ["0999-01-02T03:04:05.000000+00:00", "2026-12-05T01:30:00.000000+00:00",
                     "2026-12-05T00:00:00.000001+00:00"]
    assert sorted(texts) == [texts[0], texts[2], texts[1]]


def test_sqlite_runs_in_wal_mode_with_full_sync(sqlite_inbox, sqlite_path):
    sqlite_inbox.check_writable()
    connection = sqlite3.connect(sqlite_path)
    assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    connection.close()
    assert sqlite_inbox.inbox._connection.execute("PRAGMA synchronous").fetchone()[0] == 2


def test_the_inbox_its_wal_and_shm_files_are_private_to_omgates_user(omgate_server, tmp_path):
    """They hold what notifications say: with the usual umask (0022) SQLite would create
    them readable by every local user."""
    server = omgate_server(umask=0o022)
    assert is_ack(server.post((PAYLOADS / "amplabs-create_account.xml").read_bytes()))
    database = tmp_path / "inbox.db"
    files = [database, *(Path(f"{database}{suffix}") for suffix in ("-wal", "-shm",
                                                                      ".writer-lock"))]
    modes = {path.name: oct(path.stat().st_mode & 0o777) for path in files}
    assert modes == dict.fromkeys(modes, "0o600")
    assert server.events("config.file_permissions") == []


def test_a_failed_message_stores_none_of_its_notifications(sqlite_inbox, sqlite_path):
    sqlite_inbox.store(incoming("amplabs-create_account.xml"))
    connection = sqlite3.connect(sqlite_path)
    connection.execute(  # fails on the third notification, after two inserts succeeded
        "CREATE TRIGGER fail BEFORE INSERT ON notifications "
        "WHEN NEW.notification_id = '04lxx000000CaSgAAK' "
        "BEGIN SELECT RAISE(ABORT, 'disk trouble'); END")
    connection.commit()
    connection.close()
    results = sqlite_inbox.concurrently([incoming("amplabs-batch_update_contacts.xml"),
                                         unique_message(7)])
    assert isinstance(results[0], InboxError) and "disk trouble" in str(results[0])
    assert results[1].new == 1  # the other message of the same group commit is stored
    assert {item.notification_id for item in sqlite_inbox.list(limit=10)} == {
        "04lxx000000CaSdAAK", "04l000000000007AAA"}


def test_a_group_that_fills_the_database_fails_naming_the_cause(sqlite_path):
    """SQLite rolls a whole transaction back when the database is full: the group's
    savepoint is gone with it, and "no such savepoint" replaced the cause."""
    async def scenario() -> list:
        inbox = await open_inbox(f"sqlite:///{sqlite_path}")
        try:
            await inbox.store(unique_message(0))
            def no_more_pages() -> None:  # the file may grow no more
                connection = inbox._connect()
                [pages] = connection.execute("PRAGMA page_count").fetchone()
                connection.execute(f"PRAGMA max_page_count = {pages}")

            await inbox._run(no_more_pages)
            fields = "".join(f"<sf:F{index}>{'v' * 500}</sf:F{index}>" for index in range(40))
            large = [IncomingMessage(parse_message(envelope(notification(
                f"04l{index:012d}AAA", fields=fields))), "/salesforce/outbound", NOW)
                for index in range(1, 40)]
            grouped = await asyncio.gather(*(inbox.store(message) for message in large),
                                           return_exceptions=True)
            alone = await asyncio.gather(inbox.store(large[0]), return_exceptions=True)
            return [*grouped, *alone]  # (one alone is stored behind its own savepoint)
        finally:
            await inbox.close()

    results = asyncio.run(scenario())
    assert results and all(isinstance(result, InboxError) for result in results), results
    assert all("full" in str(result) for result in results), results[0]
    assert not any("savepoint" in str(result) for result in results), results[0]


def test_unwritable_inbox_is_reported(sqlite_inbox, sqlite_path):
    sqlite_inbox.check_writable()
    break_writes(sqlite_path, "heartbeat", "disk is read-only")
    with pytest.raises(InboxError, match="disk is read-only"):
        sqlite_inbox.check_writable()


def _store_within(inbox: SqliteInbox, seconds: float, *, then: Callable[[], None]) -> list:
    """What one store answered (TimeoutError if nothing within ``seconds``); ``then`` runs
    before the inbox closes, which waits for its thread."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(asyncio.wait_for(
            inbox.store_batch([unique_message(11)]), seconds))
    finally:
        then()
        loop.run_until_complete(inbox.close())
        loop.close()


class FirstCommitHeld(SqliteInbox):
    """A SQLite inbox whose first commit waits for ``release``; it notes each batch and the
    thread each message's rows were made on."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.release = threading.Event()
        self.batches: list[int] = []
        self.prepared_on: list[int] = []

    def prepare(self, incoming: IncomingMessage) -> list[dict]:
        self.prepared_on.append(threading.get_ident())
        return super().prepare(incoming)

    def _store_batch(self, messages):  # type: ignore[no-untyped-def]
        self.batches.append(len(messages))
        if len(self.batches) == 1:
            self.release.wait(10)
        return super()._store_batch(messages)


def test_rows_are_made_as_messages_arrive_not_between_two_commits(sqlite_path):
    """The 100-notification stall (docs/PERFORMANCE.md): a message arriving during a commit
    has its rows made at once, on the event loop, so that when the commit ends the next
    one starts without waiting for them, and the acknowledgements go out meanwhile."""
    inbox = FirstCommitHeld(sqlite_path)

    async def scenario() -> tuple[int, list]:
        first = asyncio.create_task(inbox.store(unique_message(1)))
        await asyncio.sleep(0.1)  # its commit has begun, and is held
        others = [asyncio.create_task(inbox.store(unique_message(i))) for i in (2, 3)]
        await asyncio.sleep(0)  # both are queued
        prepared_during_the_commit = len(inbox.prepared_on)
        inbox.release.set()
        results = await asyncio.gather(first, *others)
        await inbox.close()
        return prepared_during_the_commit, results

    prepared, results = asyncio.run(scenario())
    assert prepared == 3  # not after the commit before
    assert inbox.batches == [1, 2]
    assert [result.new for result in results] == [1, 1, 1]
    assert set(inbox.prepared_on) == {threading.get_ident()}  # none in the inbox thread


def test_a_writer_that_never_gives_its_turn_back_stops_no_store(sqlite_path):
    """A stopped `omgate inbox retry` (Ctrl-Z) or a paused container holding the writers'
    lock file must not leave messages unanswered: after busy_timeout the store goes on
    under SQLite's own locking."""
    sqlite_path.parent.mkdir(parents=True)
    holder = os.open(f"{sqlite_path}.writer-lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(holder, fcntl.LOCK_EX)
    [result] = _store_within(SqliteInbox(sqlite_path, busy_timeout_ms=300), 5,
                             then=lambda: os.close(holder))
    assert result.new == 1


def test_a_lock_file_that_cannot_be_opened_stops_no_store(sqlite_path):
    """The lock file left by another user (root ran a tool first), or a folder in its
    place: the store goes on under SQLite's own locking."""
    sqlite_path.parent.mkdir(parents=True)
    Path(f"{sqlite_path}.writer-lock").mkdir()
    [result] = _store_within(SqliteInbox(sqlite_path), 5, then=lambda: None)
    assert result.new == 1


def test_a_version_1_inbox_is_migrated_and_its_rows_become_pending(sqlite_path):
    sqlite_path.parent.mkdir(parents=True)
    connection = sqlite3.connect(sqlite_path)
    from service.inbox.sqlite_database import MIGRATIONS

    for statement in MIGRATIONS[1]:
        connection.execute(statement)
    connection.execute("INSERT INTO notifications (org_key, notification_key, organization_id, "
                       "action_id, notification_id, record_id, fields, endpoint, received_at) "
                       "VALUES ('00D', '04l', '00D', '04k', '04l', '001xx000003DGb2AAG', '{}', "
                       "'/x', '2026-01-01T00:00:00+00:00')")
    connection.execute("PRAGMA user_version=1")
    connection.commit()
    connection.close()
    opened = SyncInbox(f"sqlite:///{sqlite_path}")
    try:
        [row] = opened.list(limit=10)
        assert row.state == PENDING
        assert [n.id for n in opened.claim(limit=5, lease_seconds=5, now=NOW)] == [row.id]
    finally:
        opened.shutdown()


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
        asyncio.run(open_inbox("mysql://localhost/x"))


def test_unreachable_postgres_is_reported():
    from harness import free_port

    port = free_port()
    with pytest.raises(InboxError, match="cannot connect") as refused:
        asyncio.run(open_inbox(f"postgresql://nobody:secret@127.0.0.1:{port}/x"))
    # the cause, not only that the pool waited (an operator's tool said "pool
    # initialization incomplete after 30.0 sec"), and never the password
    assert "Connection refused" in str(refused.value) and f"port {port}" in str(refused.value)
    assert "secret" not in str(refused.value)


def test_postgresql_stores_of_one_record_take_turns(postgres):
    """Ids come from a sequence, so two stores of one record in flight at once could commit
    out of id order and a claim in between would hand out the newer state alone. The
    second store waits for the first: claims see the states in arrival order."""
    import psycopg

    from service.inbox.dialect import POSTGRES
    from service.inbox.encoding import row_values
    from service.inbox.postgres import record_lock
    from service.inbox.statements import insert_statement

    url = postgres.new_database()
    record, other_record = "001A00000000001AAA", "001B00000000001AAA"

    async def scenario() -> list[str]:
        inbox = await open_inbox(url, group_commit=False)
        older = row_values(unique_message(1, record=record))[0]
        try:
            # a store of the older state that has not committed yet
            async with await psycopg.AsyncConnection.connect(url) as in_flight, \
                    in_flight.transaction():
                await in_flight.execute("SELECT pg_advisory_xact_lock(%s)",
                                        (record_lock(older["org_key"], older["record_key"]),))
                await in_flight.execute(insert_statement(POSTGRES), older)
                newer = asyncio.create_task(inbox.store(unique_message(2, record=record)))
                await asyncio.wait_for(inbox.store(unique_message(3, record=other_record)),
                                       10)  # other records are not held up
                await asyncio.sleep(0.3)
                assert not newer.done()
                assert [n.notification_id[3:15] for n in await inbox.claim(
                    limit=10, lease_seconds=60, now=NOW)] == ["000000000003"]
            await asyncio.wait_for(newer, 10)
            claimed = await inbox.claim(limit=10, lease_seconds=60, now=NOW)
            return [n.notification_id[3:15] for n in claimed]
        finally:
            await inbox.close()

    assert asyncio.run(scenario()) == ["000000000001"]  # the older state, alone


def test_a_migration_waits_for_anothers_lock_only_so_long(postgres, monkeypatch):
    """An omgate stuck holding the migration lock stops another's start (or tool) for
    MIGRATION_LOCK_WAIT_SECONDS, then says so, instead of hanging it for good."""
    import psycopg

    from service.inbox import postgres_database

    monkeypatch.setattr(postgres_database, "MIGRATION_LOCK_WAIT_SECONDS", 1)
    url = postgres.new_database()

    async def scenario() -> None:
        async with await psycopg.AsyncConnection.connect(url) as stuck, stuck.transaction():
            await stuck.execute("SELECT pg_advisory_xact_lock(%s)",
                                (postgres_database.MIGRATION_LOCK,))
            with pytest.raises(InboxError, match=r"migration failed: .*lock timeout"):
                await asyncio.wait_for(open_inbox(url), 20)
        inbox = await open_inbox(url)  # the lock given back, the start goes on
        await inbox.close()

    asyncio.run(scenario())


def test_postgresql_store_waits_for_a_record_lock_only_so_long(postgres, monkeypatch):
    import psycopg

    from service.inbox import postgres as postgres_inbox
    from service.inbox.encoding import row_values

    monkeypatch.setattr(postgres_inbox, "LOCK_WAIT_MS", 300)
    url = postgres.new_database()
    message = unique_message(1, record="001A00000000001AAA")
    row = row_values(message)[0]

    async def scenario() -> None:
        inbox = await open_inbox(url, group_commit=False)
        try:
            async with await psycopg.AsyncConnection.connect(url) as stuck, stuck.transaction():
                await stuck.execute("SELECT pg_advisory_xact_lock(%s)", (
                    postgres_inbox.record_lock(row["org_key"], row["record_key"]),))
                with pytest.raises(InboxError, match="lock timeout"):
                    await asyncio.wait_for(inbox.store(message), 10)
            assert (await inbox.store(message)).new == 1  # nothing half-stored before
        finally:
            await inbox.close()

    asyncio.run(scenario())
