"""The console's inbox: the notifications and the dead letters page by page with their
counts, one notification's own page (its fields, delivery history and chain), Retry and
Retry all (after one confirmation).

Every read is bounded: a page is one ``LIMIT`` query on either side of an inbox id (keyset,
in SQL, on both backends), and the counts are ``count(*)`` queries.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from service.console.auth import CSRF_COOKIE, CSRF_FIELD, csrf_matches, from_own_pages
from service.console.queries import QueryReader
from service.console.rendering import redirect_with_notice, render
from service.inbox import DEAD, STATES, Inbox, ListedNotification, State, inbox_id_of
from service.inbox.chains import LISTENER, ChainRecord, EndpointSeen
from service.observatory.views import chain_row
from service.text import clipped

PAGE_SIZE = 50
EVENTS_SHOWN = 100  # of a notification's delivery history, the latest
CONFLICTS_SHOWN = 20  # of its conflicting redeliveries, the first
FIELDS_SHOWN = 200
FIELD_CHARACTERS = 2000  # of one field's value
ID_PATTERN = re.compile(r"^[A-Za-z0-9]{15}([A-Za-z0-9]{3})?$")
CURSORS = ("before", "after", "dead_before", "dead_after")
FORM_TYPE = "application/x-www-form-urlencoded"
FORM_BYTES = 16 * 1024  # a Retry button's form: the CSRF token and the page's query
FORM_FIELDS = 32


@dataclass(frozen=True)
class InboxQuery:
    """What the inbox page shows: the search, the state filter, and where each table's
    page starts (``before``/``after`` an inbox id; ``dead_``: the dead letters')."""

    q: str = ""
    key: str | None = None  # the search, when it is an Id
    state: State | None = None
    before: int | None = None
    after: int | None = None
    dead_before: int | None = None
    dead_after: int | None = None

    def values(self, **changes: Any) -> dict[str, str]:
        kept = {"q": self.q, "state": self.state,
                **{name: getattr(self, name) for name in CURSORS}, **changes}
        return {name: str(value) for name, value in kept.items() if value not in (None, "")}

    def href(self, **changes: Any) -> str:
        """The inbox page showing this view, with ``changes``: always the console's own."""
        query = urlencode(self.values(**changes))
        return f"/inbox?{query}" if query else "/inbox"


def read_inbox_query(reader: QueryReader) -> InboxQuery:
    q = reader.text("q")
    key = q if ID_PATTERN.match(q) else None
    if q and key is None:
        reader.ignore("q", q, "an Id has 15 or 18 letters and digits",
                      "showing every notification")
    return InboxQuery(q, key, reader.choice("state", STATES, "showing every state"),
                      *(reader.inbox_id(name, "showing the latest") for name in CURSORS))


@dataclass(frozen=True)
class Page:
    """One page of a table: its rows (latest first), where it is, and links to the pages
    beside it (None: there is none that way)."""

    rows: tuple[ListedNotification, ...]
    first: int  # the position of its first row, from 1 (0: no row)
    total: int
    newer: str | None
    older: str | None
    latest: str | None

    @property
    def last(self) -> int:
        return self.first + len(self.rows) - 1 if self.rows else 0


async def read_page(inbox: Inbox, query: InboxQuery, *, state: State | None,
                    before: int | None, after: int | None, prefix: str = "") -> Page:
    rows = await inbox.recent(limit=PAGE_SIZE, state=state, key=query.key,
                              before_id=before, after_id=after)
    total = await inbox.count(state=state, key=query.key)
    moved = {f"{prefix}before": None, f"{prefix}after": None}
    if not rows:
        return Page((), 0, total, None, None,
                    query.href(**moved) if before or after else None)
    above = await inbox.count(state=state, key=query.key, after_id=rows[0].id)
    first = above + 1
    return Page(
        tuple(rows), first, total,
        newer=query.href(**{**moved, f"{prefix}after": rows[0].id}) if above else None,
        older=query.href(**{**moved, f"{prefix}before": rows[-1].id})
        if first + len(rows) - 1 < total else None,
        latest=query.href(**moved) if above else None)


def field_text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return clipped(text, FIELD_CHARACTERS)


def _decision_here(record: ChainRecord, endpoint: str) -> EndpointSeen | None:
    """The chain's last decision on the notification's endpoint, else the listener's."""
    decided = {seen.endpoint: seen for seen in record.endpoints if seen.decision is not None}
    return decided.get(endpoint) or decided.get(LISTENER)


def _refused(status: int, why: str) -> Response:
    return PlainTextResponse(why + "\n", status_code=status)


async def posted_form(request: Request) -> FormData | Response:
    """The form of a Retry button, or the answer refusing it. Before a byte of the body is
    read: sent from the console's own pages, with the CSRF cookie, urlencoded, at most
    ``FORM_BYTES``; then its CSRF field must match the cookie."""
    cookie = request.cookies.get(CSRF_COOKIE)
    if not from_own_pages(request.headers):
        return _refused(403, "the form was not sent from the console's own pages")
    if not cookie:
        return _refused(403, "the form's CSRF token does not match")
    if request.headers.get("content-type", "").partition(";")[0].strip().lower() != FORM_TYPE:
        return _refused(415, f"a form is sent as {FORM_TYPE}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > FORM_BYTES:
            return _refused(413, f"a form is at most {FORM_BYTES:,} bytes")
    try:
        pairs: list[tuple[str, str | UploadFile]] = list(parse_qsl(
            body.decode("ascii"), keep_blank_values=True, max_num_fields=FORM_FIELDS))
        form = FormData(pairs)
    except ValueError:  # not ASCII (UnicodeDecodeError), or too many fields
        return _refused(400, "the form cannot be read")
    if not csrf_matches(cookie, str(form.get(CSRF_FIELD, ""))):
        return _refused(403, "the form's CSRF token does not match")
    return form


def inbox_routes(inbox: Inbox) -> list[Route]:
    async def notifications(request: Request) -> Response:
        reader = QueryReader(request.query_params)
        query = read_inbox_query(reader)
        shown = await read_page(inbox, query, state=query.state, before=query.before,
                                after=query.after)
        dead = await read_page(inbox, query, state=DEAD, before=query.dead_before,
                               after=query.dead_after, prefix="dead_")
        return render(request, "inbox.html", {
            "shown": shown, "dead": dead, "query": query, "states": STATES,
            "all_dead": (await inbox.stats()).dead, "problems": reader.problems,
            "page": "inbox"})

    async def notification(request: Request) -> Response:
        inbox_id = inbox_id_of(request.path_params["inbox_id"])
        stored = await inbox.get(inbox_id) if inbox_id is not None else None
        if inbox_id is None or stored is None:
            return render(request, "missing.html", {
                "what": "notification", "key": clipped(request.path_params["inbox_id"], 40),
                "back": "/inbox", "page": "inbox"}, 404)
        events = await inbox.events(inbox_id, limit=EVENTS_SHOWN)
        conflicts = await inbox.conflicts(inbox_id, limit=CONFLICTS_SHOWN) \
            if stored.conflicts else []
        chain = None
        if stored.chain_sha256 is not None:
            matches = await inbox.chains_by_prefix(stored.chain_sha256)
            records = [record for record in matches
                       if record.chain_sha256 == stored.chain_sha256]
            if records:
                chain = await run_in_threadpool(chain_row, records[0], dt.datetime.now(dt.UTC))
        fields = list(stored.fields.items())
        return render(request, "notification.html", {
            "item": stored, "events": events, "conflicts": conflicts, "chain": chain,
            "decision": _decision_here(chain.record, stored.endpoint) if chain else None,
            "fields": [(name, field_text(value)) for name, value in fields[:FIELDS_SHOWN]],
            "fields_left_out": max(len(fields) - FIELDS_SHOWN, 0),
            "field_text": field_text, "query": InboxQuery(), "page": "inbox"})

    async def retry(request: Request) -> Response:
        form = await posted_form(request)
        if isinstance(form, Response):
            return form
        inbox_id = inbox_id_of(request.path_params["inbox_id"])
        if inbox_id is None:
            return PlainTextResponse("no such notification\n", status_code=404)
        count = await inbox.retry(inbox_id, dt.datetime.now(dt.UTC))
        notice = f"retried:{inbox_id}" if count else f"not-retried:{inbox_id}"
        if form.get("from") == "notification":
            return redirect_with_notice(f"/inbox/{inbox_id}", notice)
        return redirect_with_notice(read_inbox_query(QueryReader(form)).href(), notice)

    async def confirm_retry_all(request: Request) -> Response:
        query = read_inbox_query(QueryReader(request.query_params))
        newest = await inbox.recent(limit=1, state=DEAD)
        return render(request, "retry_all.html", {
            "count": await inbox.count(state=DEAD), "through": newest[0].id if newest else None,
            "query": query, "page": "inbox"})

    async def retry_all(request: Request) -> Response:
        form = await posted_form(request)
        if isinstance(form, Response):
            return form
        reader = QueryReader(form)
        through = reader.inbox_id("through", "")
        if through is None:
            return PlainTextResponse("the form names no dead letter to retry up to\n",
                                     status_code=400)
        count = await inbox.retry(None, dt.datetime.now(dt.UTC), through_id=through)
        return redirect_with_notice(read_inbox_query(reader).href(), f"retried-all:{count}")

    return [
        Route("/inbox", notifications, methods=["GET", "HEAD"]),
        Route("/inbox/retry-all", confirm_retry_all, methods=["GET", "HEAD"]),
        Route("/inbox/retry-all", retry_all, methods=["POST"]),
        Route("/inbox/{inbox_id}", notification, methods=["GET", "HEAD"]),
        Route("/inbox/{inbox_id}/retry", retry, methods=["POST"]),
    ]
