"""The console on server.admin_bind, driven by a real Chromium (the distribution's, through
Playwright) against a running omgate; and its guards, with a plain HTTP client."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from client_pki import ClientPki, _write, client_leaf
from conftest import Launcher
from harness import ROOT, RunningServer, free_port, is_ack, require, require_executable, run_omgate
from messages import envelope, notification
from observatory import MixedRun, mixed_cases, send_mixed_run

from service.inbox import DEAD, Inbox, open_inbox
from service.inbox.chains import LISTENER, HourCount

TOKEN = "console-token-for-tests-0123456789"  # noqa: S105 - a test token
OUTPUT = Path(os.environ.get("OMGATE_TEST_OUTPUT") or ROOT / "tests" / "output")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync"]
PINNED = "/salesforce/pinned"
NARROW = {"width": 420, "height": 900}


@pytest.fixture(scope="module")
def browser():
    executable = require_executable("chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require(False, "playwright is not installed (pip install -e '.[dev]')")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def console(omgate_server, client_pki, tmp_path):
    """A request-mode omgate with its console, after valid, misordered and leaf-only
    chains each sent a message (and flushed: the server is stopped and started again)."""
    token_file = tmp_path / "admin-token"
    token_file.write_text(TOKEN + "\n")
    run = mixed_cases(client_pki, tmp_path / "cases")
    run.cases["leaf_only"] = client_pki.cases["leaf_only"]
    settings = {"server": {"admin_bind": f"127.0.0.1:{free_port()}"},
                "admin": {"token_file": token_file}, "client_auth": {"mode": "request"}}
    first = omgate_server(settings)
    send_mixed_run(first, run, {"valid": 1, "misordered": 1, "leaf_only": 1})
    assert first.stop() == 0
    server = omgate_server(settings, port=first.https_port)
    return server, run, f"http://{settings['server']['admin_bind']}"


def _screenshot(page, name: str, *, full_page: bool = True) -> None:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(OUTPUT / name), full_page=full_page)


def _page(browser, origin: str, **options: Any):
    """A page with the console's credentials; the list it fills with every request made
    elsewhere and every message the browser logs about the Content-Security-Policy."""
    context = browser.new_context(http_credentials={"username": "admin", "password": TOKEN},
                                  **{"viewport": {"width": 1200, "height": 900}, **options})
    page = context.new_page()
    elsewhere: list[str] = []
    page.on("request", lambda request: None if request.url.startswith(origin + "/")
            else elsewhere.append(request.url))
    page.on("console", lambda message: elsewhere.append(message.text)
            if "Content Security Policy" in message.text else None)
    return page, elsewhere


def _in_inbox(database: Path, work: Callable[[Inbox], Any]) -> Any:
    """``work(inbox)`` on the SQLite inbox a running omgate uses too."""
    async def run() -> Any:
        inbox = await open_inbox(f"sqlite:///{database}", group_commit=False)
        try:
            return await work(inbox)
        finally:
            await inbox.close()

    with ThreadPoolExecutor(1) as thread:  # Playwright's loop runs in this one
        return thread.submit(asyncio.run, run()).result()


def _dead_letter(database: Path) -> int:
    """Give up on the stored notification, as the delivery worker does after max_attempts."""
    async def give_up(inbox: Inbox) -> int:
        [stored] = (await inbox.list(limit=1))
        await inbox.mark_failed(stored.id, "webhook answered 500", retry_at=None,
                                now=dt.datetime.now(dt.UTC))
        return stored.id

    return _in_inbox(database, give_up)


def test_the_chain_pages_draw_misorder_and_a_missing_issuer(browser, console):
    _server, run, origin = console
    page, elsewhere = _page(browser, origin)
    assert page.goto(origin + "/").status == 200
    assert "mode request" in page.inner_text("h2")
    page.goto(origin + "/chains")
    assert page.locator("table.chains tbody tr").count() == 3

    page.goto(f"{origin}/chains/{run.key('misordered')}")
    leaf = page.locator("svg.chain-picture g#card-0")
    assert "client certificate" in leaf.text_content()
    assert "chain_out_of_order" in leaf.get_attribute("data-badges").split()
    assert page.locator("svg.chain-picture g.arrow.upward").count() >= 1  # visibly misordered
    _screenshot(page, "chain-misordered.png")

    page.goto(f"{origin}/chains/{run.key('leaf_only')}")
    gap = page.locator("svg.chain-picture g#card-missing")
    assert "CN=Test client intermediate CA" in gap.text_content()
    assert "missing issuer" in gap.text_content()
    assert "would be refused" in page.inner_text("p.verdict")
    _screenshot(page, "chain-leaf-only.png")
    assert elsewhere == []


def test_retry_moves_a_dead_letter_back_to_pending(browser, console, tmp_path):
    server, _run, origin = console
    inbox_id = _dead_letter(tmp_path / "inbox.db")
    page, elsewhere = _page(browser, origin)
    page.goto(origin + "/inbox")
    row = page.locator(f"table.dead tr#dead-{inbox_id}")
    assert row.count() == 1
    row.get_by_role("button", name="Retry").click()
    page.wait_for_url(origin + "/inbox")
    assert page.locator(f"table.dead tr#dead-{inbox_id}").count() == 0
    listed = run_omgate("inbox", "show", str(inbox_id), "--config", str(server.config_path))
    assert '"state": "pending"' in listed.stdout
    assert "SessionId" not in page.content() and "session_id" not in page.content()
    assert elsewhere == []


def test_the_console_asks_for_the_token_and_a_csrf_token(browser, console):
    _server, _run, origin = console
    anonymous = browser.new_context()  # no credentials: its requests carry no token
    response = anonymous.request.get(origin + "/chains")
    assert response.status == 401
    assert response.headers["www-authenticate"].startswith("Basic")
    anonymous.close()

    assert httpx.get(origin + "/", headers={"Authorization": "Bearer nope"}).status_code == 401
    answer = httpx.get(origin + "/", headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 200
    policy = answer.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy
    assert "require-trusted-types-for 'script'" in policy and "unsafe" not in policy
    for action in ("/inbox/1/retry", "/inbox/retry-all"):
        forged = httpx.post(origin + action, data={"csrf": "guessed", "through": "1"},
                            headers={"Authorization": f"Bearer {TOKEN}"})
        assert forged.status_code == 403, action


def test_a_console_off_loopback_needs_a_token(tmp_path):
    config = tmp_path / "omgate.toml"
    config.write_text(f'[server]\nadmin_bind = "0.0.0.0:{free_port()}"\n'
                      f'[inbox]\nurl = "sqlite:///{tmp_path / "inbox.db"}"\n')
    result = run_omgate("serve", "--config", str(config), env={"OMGATE_ADMIN_TOKEN": ""})
    assert result.returncode == 2
    assert "admin_bind" in result.stderr and "token_file" in result.stderr


# -- the operator's second walk (issue 24, items 10 to 14) ------------------------------
#
# An omgate as the operator had it: 124 notifications, 73 of them dead letters (delivery
# to a webhook that refused every connection, one attempt each), a sender whose pinned
# certificate expires in 20 days, a refused client, a client without a certificate, and
# 30 days of decisions on two endpoints.

DEAD_LETTERS, PENDING = 73, 51


@dataclass(frozen=True)
class Operated:
    server: RunningServer
    origin: str
    run: MixedRun
    database: Path
    hours: tuple[HourCount, ...]  # the decisions seeded before today's


def _batch(first: int, count: int, name: str = "Acme") -> bytes:
    """One message of ``count`` notifications, each about a record of its own."""
    return envelope(*(notification(f"04l{index:012d}AAA",
                                   f"<sf:Name>{name} {index}</sf:Name>",
                                   record_id=f"001{index:012d}AAA")
                      for index in range(first, first + count)))


def _post(server: RunningServer, body: bytes, case: Any, path: str = "/salesforce/outbound"
          ) -> None:
    response = server.post(body, path=path, cert=case)
    assert is_ack(response), response.text


def _wait_for_dead(database: Path, count: int) -> None:
    async def dead(inbox: Inbox) -> int:
        return await inbox.count(state=DEAD)

    for _ in range(300):
        if _in_inbox(database, dead) == count:
            return
        time.sleep(0.1)
    raise AssertionError(f"delivery did not give up on {count} notifications")


def _seed_hours(database: Path, now: dt.datetime) -> tuple[HourCount, ...]:
    """Earlier decisions, as the registry's flushes wrote them: two hours ago and 10 days
    ago on the listener, and 3 days ago on the pinned endpoint."""
    hour = now.replace(minute=0, second=0, microsecond=0)
    hours = (HourCount(hour - dt.timedelta(hours=2), LISTENER, "accept", 7),
             HourCount(hour - dt.timedelta(hours=2), LISTENER, "would_reject", 2),
             HourCount(hour - dt.timedelta(days=10), LISTENER, "unproven", 4),
             HourCount(hour - dt.timedelta(days=3), PINNED, "reject", 3))

    async def seed(inbox: Inbox) -> None:
        await inbox.record_chains([], hours)

    _in_inbox(database, seed)
    return hours


def _operate(launcher: Launcher, client_pki: ClientPki, folder: Path) -> Operated:
    now = dt.datetime.now(dt.UTC)
    run = mixed_cases(client_pki, folder / "cases")
    run.cases["rotating"] = _write(folder / "cases", "rotating", client_leaf(
        client_pki.intermediate, "rotating.client.test",
        not_before=now - dt.timedelta(days=345), not_after=now + dt.timedelta(days=20, hours=1)),
        client_pki.intermediate)
    token_file = folder / "admin-token"
    token_file.write_text(TOKEN + "\n")
    settings: dict[str, Any] = {
        "server": {"admin_bind": f"127.0.0.1:{free_port()}"},
        "admin": {"token_file": token_file}, "client_auth": {"mode": "request"},
        "endpoints": [{"path": "/salesforce/outbound"},
                      {"path": PINNED, "client_auth": {"pin_files": [run.cases["rotating"].leaf]}}],
    }
    # Delivery to a webhook nobody listens on, one attempt: every notification stored now
    # becomes a dead letter.
    failing = launcher({**settings, "delivery": {
        "webhook_url": f"http://127.0.0.1:{free_port()}/hook", "max_attempts": 1}})
    _post(failing, _batch(0, 60), run.cases["valid"])
    _post(failing, _batch(60, DEAD_LETTERS - 60), run.cases["valid"])
    _wait_for_dead(folder / "inbox.db", DEAD_LETTERS)
    assert failing.stop() == 0
    receiving = launcher(settings, port=failing.https_port)
    _post(receiving, _batch(100, PENDING - 4), run.cases["valid"])
    _post(receiving, _batch(200, 1), run.cases["untrusted"])
    _post(receiving, _batch(300, 1), None)
    _post(receiving, _batch(400, 1), run.cases["rotating"], PINNED)
    _post(receiving, _batch(500, 1), run.cases["misordered"])
    with receiving.client(run.cases["expired"]) as client:  # a connection, no message
        assert client.get("/").status_code == 404
    assert receiving.stop() == 0  # its last flush records the chains and decisions
    hours = _seed_hours(folder / "inbox.db", now)
    server = launcher(settings, port=failing.https_port)
    return Operated(server, f"http://{settings['server']['admin_bind']}", run,
                    folder / "inbox.db", hours)


@pytest.fixture(scope="module")
def operated(dev_pki, client_pki, server_log_dir, tmp_path_factory) -> Iterator[Operated]:
    """The operator's omgate, for the tests that only read from it."""
    folder = tmp_path_factory.mktemp("operated")
    launcher = Launcher(dev_pki, client_pki.root_file, server_log_dir, folder, "operated")
    yield _operate(launcher, client_pki, folder)
    launcher.kill_all()


@pytest.fixture
def operated_anew(omgate_server, client_pki, tmp_path) -> Operated:
    """The operator's omgate, for a test that changes it."""
    return _operate(omgate_server, client_pki, tmp_path)


def _pager(page, table: str) -> str:
    """What the pager above ``table`` says (its en dash as a hyphen)."""
    return page.locator(f"nav.pager[data-table={table}] .count").inner_text().replace(
        "\u2013", "-")


def _ids(page, table: str) -> list[int]:
    return [int(text) for text in page.locator(f"table.{table} tbody td:first-child a")
            .all_inner_texts()]


def _stored_ids(database: Path, state: str | None = None) -> list[int]:
    async def ids(inbox: Inbox) -> list[int]:
        return [item.id for item in await inbox.recent(limit=1000, state=state)]

    return _in_inbox(database, ids)


# item 10 ----------------------------------------------------------------------------------

def test_the_inbox_pages_through_every_notification_and_dead_letter_with_counts(
        browser, operated):
    page, elsewhere = _page(browser, operated.origin)
    page.goto(operated.origin + "/inbox")
    every, dead = _stored_ids(operated.database), _stored_ids(operated.database, DEAD)
    assert (len(every), len(dead)) == (DEAD_LETTERS + PENDING, DEAD_LETTERS)
    assert _pager(page, "notifications") == "1-50 of 124 notifications"
    assert _pager(page, "dead") == "1-50 of 73 dead letters"
    assert _ids(page, "notifications") == every[:50] and _ids(page, "dead") == dead[:50]
    _screenshot(page, "inbox.png")

    seen = _ids(page, "notifications")
    for expected in ("51-100 of 124 notifications", "101-124 of 124 notifications"):
        page.locator("nav.pager[data-table=notifications] a.older").click()
        assert _pager(page, "notifications") == expected
        assert _pager(page, "dead") == "1-50 of 73 dead letters"  # each table its own page
        seen += _ids(page, "notifications")
    assert seen == every  # every notification once, newest first
    assert page.locator("nav.pager[data-table=notifications] a.older").count() == 0
    page.locator("nav.pager[data-table=notifications] a.newer").click()
    assert _pager(page, "notifications") == "51-100 of 124 notifications"
    assert _ids(page, "notifications") == every[50:100]

    page.locator("nav.pager[data-table=dead] a.older").click()
    assert _pager(page, "dead") == "51-73 of 73 dead letters"
    assert _ids(page, "dead") == dead[50:]
    assert _pager(page, "notifications") == "51-100 of 124 notifications"
    assert elsewhere == []


def test_the_search_box_finds_dead_letters_too(browser, operated):
    page, _elsewhere = _page(browser, operated.origin)
    wanted = _stored_ids(operated.database, DEAD)[-1]  # the oldest: on no first page

    async def record_of(inbox: Inbox) -> str:
        return (await inbox.get(wanted)).record_id

    record = _in_inbox(operated.database, record_of)
    page.goto(operated.origin + "/inbox")
    page.fill("input[name=q]", record)
    page.get_by_role("button", name="Search").click()
    assert _ids(page, "dead") == [wanted] and _ids(page, "notifications") == [wanted]
    assert _pager(page, "dead") == "1-1 of 1 dead letter"
    page.select_option("select[name=state]", "pending")
    page.get_by_role("button", name="Search").click()
    assert _ids(page, "notifications") == [] and _ids(page, "dead") == [wanted]


def test_retry_says_so_and_keeps_the_filter(browser, operated_anew):
    operated = operated_anew
    page, elsewhere = _page(browser, operated.origin)
    page.goto(operated.origin + "/inbox?state=dead")
    page.locator("nav.pager[data-table=dead] a.older").click()
    [first, *_] = _ids(page, "dead")
    page.locator(f"table.dead tr#dead-{first}").get_by_role("button", name="Retry").click()
    page.wait_for_load_state()
    assert "state=dead" in page.url and "dead_before=" in page.url  # where the operator was
    assert page.locator("select[name=state]").input_value() == "dead"
    assert page.inner_text("p.notice") == (
        f"Notification {first} is pending again: delivery tries it at once.")
    assert first not in _stored_ids(operated.database, DEAD)
    assert _pager(page, "dead").endswith("of 72 dead letters")
    page.reload()
    assert page.locator("p.notice").count() == 0  # said once
    assert elsewhere == []


def test_retry_all_dead_letters_after_one_confirmation(browser, operated_anew):
    operated = operated_anew
    page, elsewhere = _page(browser, operated.origin)
    page.goto(operated.origin + "/inbox?state=dead")
    page.get_by_role("link", name="Retry all 73 dead letters…").click()
    assert "73 dead letters are waiting" in page.inner_text("main")
    assert _stored_ids(operated.database, DEAD) != []  # nothing happens before the answer
    _screenshot(page, "inbox-retry-all.png")
    page.get_by_role("button", name="Retry 73 dead letters").click()
    page.wait_for_load_state()
    assert page.url.endswith("/inbox?state=dead")
    assert page.inner_text("p.notice").startswith("73 dead letters are pending again")
    assert _stored_ids(operated.database, DEAD) == []
    assert _pager(page, "dead") == "No dead letter"
    listed = run_omgate("inbox", "list", "--state", "dead", "--config",
                        str(operated.server.config_path))
    assert json.loads(listed.stdout) == []
    assert elsewhere == []


@pytest.mark.parametrize(("path", "named", "instead"), [
    ("/chains?since=abc", "since=abc", "showing 7d"),
    ("/chains?outcome=accepted&endpoint=/nowhere", "outcome=accepted", "every outcome"),
    ("/chains?endpoint=/nowhere", "endpoint=/nowhere", "every endpoint"),
    ("/inbox?state=deadd", "state=deadd", "every state"),
    ("/inbox?before=abc", "before=abc", "the latest"),
    ("/inbox?q=not-an-id", "q=not-an-id", "every notification"),
    ("/?window=1y", "window=1y", "the last 24h"),
])
def test_a_query_value_the_page_cannot_use_is_named(browser, operated, path, named, instead):
    page, _elsewhere = _page(browser, operated.origin)
    assert page.goto(operated.origin + path).status == 200
    problems = page.locator("p.problem").all_inner_texts()
    assert any(named in text and instead in text for text in problems), problems


# item 11 ----------------------------------------------------------------------------------

def test_a_notification_has_its_own_page_with_its_delivery_and_its_chain(browser, operated):
    page, elsewhere = _page(browser, operated.origin)
    page.goto(operated.origin + "/inbox?state=dead")
    first_dead = _ids(page, "dead")[0]
    page.locator(f"table.dead tr#dead-{first_dead} td:first-child a").click()
    assert page.url == f"{operated.origin}/inbox/{first_dead}"
    assert "dead" in page.inner_text("p.state")
    fields = dict(zip(page.locator("table.fields th").all_inner_texts(),
                      page.locator("table.fields td").all_inner_texts(), strict=True))
    assert fields["Name"].startswith("Acme ")
    events = page.locator("table.events tbody tr")
    assert events.count() == 2  # received, then the one attempt that gave up
    assert "delivery gave up" in events.nth(1).inner_text()
    assert "connect" in events.nth(1).inner_text().lower()  # the webhook's refusal
    assert "SessionId" not in page.content() and "session_id" not in page.content()
    _screenshot(page, "notification.png")

    decision = page.locator("p.decision a")
    assert decision.inner_text() == "accept"  # the decision links to its chain
    page.locator("p.chain-link a").click()
    assert page.url == f"{operated.origin}/chains/{operated.run.key('valid')}"
    assert "valid.client.test" in page.locator("svg.chain-picture").text_content()
    assert elsewhere == []


def test_the_overviews_counts_link_to_the_chains_behind_them(browser, operated):
    page, elsewhere = _page(browser, operated.origin)
    page.goto(operated.origin + "/")
    assert page.locator("table.decisions th").nth(2).inner_text() == "would_reject"
    count = page.locator("table.decisions td").nth(2).locator("a")
    assert int(count.inner_text()) >= 3  # today's two seeded, and the untrusted client's
    count.click()
    assert "outcome=would_reject" in page.url and "since=24h" in page.url
    keys = page.locator("table.chains tbody td:first-child a").evaluate_all(
        "links => links.map(link => link.getAttribute('href'))")
    assert f"/chains/{operated.run.key('untrusted')}" in keys
    assert set(page.locator("table.chains tbody td.outcome").all_inner_texts()) == {
        "would_reject"}

    page.goto(operated.origin + "/")
    page.locator(".figures a.figure").first.click()  # days left on the last accepted one
    assert re.fullmatch(rf"{operated.origin}/chains/[0-9a-f]{{64}}", page.url)
    page.goto(operated.origin + "/")
    page.locator(".figures a[href='/inbox?state=dead']").click()
    assert _pager(page, "notifications") == "1-50 of 73 notifications"
    page.goto(operated.origin + "/chains")
    untrusted = f"/chains/{operated.run.key('untrusted')}"
    row = page.locator(f"table.chains tbody tr:has(a[href='{untrusted}'])")
    assert row.locator("td.outcome").inner_text() == "would_reject"
    row.locator("td.outcome a").click()  # a decision links to its chain
    assert page.url == operated.origin + untrusted
    assert elsewhere == []


# item 12 ----------------------------------------------------------------------------------

TIME_PAGES = ["/inbox", "/inbox/{dead}", "/chains", "/chains/{valid}"]


def _time_pages(operated: Operated) -> list[str]:
    dead = _stored_ids(operated.database, DEAD)[0]
    return [path.format(dead=dead, valid=operated.run.key("valid")) for path in TIME_PAGES]


def test_times_are_one_format_in_the_browsers_zone_with_utc_on_hover(browser, operated):
    page, elsewhere = _page(browser, operated.origin, timezone_id="Asia/Kolkata")
    seen = 0
    for path in _time_pages(operated):
        page.goto(operated.origin + path)
        assert not re.search(r"\d\d:\d\d:\d\d\.\d{6}", page.inner_text("main")), path
        for element in page.locator("main time").all():
            utc = dt.datetime.fromisoformat(element.get_attribute("datetime"))
            assert utc.tzinfo is not None and utc.utcoffset() == dt.timedelta(0)
            local = utc + dt.timedelta(hours=5, minutes=30)
            assert element.inner_text() == local.strftime("%Y-%m-%d %H:%M GMT+5:30"), path
            assert element.get_attribute("title") == utc.strftime("%Y-%m-%d %H:%M:%S UTC")
            seen += 1
    assert seen > 10
    assert elsewhere == []  # the script ran under the Content-Security-Policy


def test_without_javascript_times_are_utc_in_the_same_format(browser, operated):
    page, _elsewhere = _page(browser, operated.origin, java_script_enabled=False)
    for path in _time_pages(operated):
        page.goto(operated.origin + path)
        texts = page.locator("main time").all_inner_texts()
        assert texts and all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", text)
                             for text in texts), (path, texts)


# item 13 ----------------------------------------------------------------------------------

def _column(chart, start: dt.datetime):
    return chart.locator(f"g.column[data-start='{start.strftime('%Y-%m-%dT%H:%M:%SZ')}']")


def _latest(chart, outcome: str) -> int:
    columns = chart.locator("g.column")
    return sum(int(columns.nth(index).get_attribute(f"data-{outcome}")) for index in (-2, -1))


def test_decisions_over_time_are_drawn_per_endpoint(browser, operated):
    page, elsewhere = _page(browser, operated.origin)
    page.goto(operated.origin + "/")
    charts = page.locator("svg.decisions-chart")
    assert charts.evaluate_all("svgs => svgs.map(svg => svg.dataset.endpoint)") == [
        "", PINNED]  # the listener's, and the endpoint with rules of its own
    listener = charts.nth(0)
    assert listener.locator("g.column").count() == 24
    two_hours_ago = _column(listener, operated.hours[0].hour)
    assert two_hours_ago.get_attribute("data-accept") == "7"
    assert two_hours_ago.get_attribute("data-would-reject") == "2"
    assert two_hours_ago.locator("rect.segment").count() == 2
    assert "7 accept, 0 reject, 2 would_reject" in two_hours_ago.locator("title").text_content()
    # the run's real connections, in this hour (or the one before, if it just began)
    assert _latest(listener, "accept") >= 4  # valid three times, rotating once
    assert _latest(listener, "would-reject") >= 2  # untrusted, expired
    assert _latest(charts.nth(1), "accept") == 1  # rotating, pinned there
    _screenshot(page, "overview.png")

    page.get_by_role("link", name="the last 30d").click()
    listener = page.locator("svg.decisions-chart").nth(0)
    assert listener.locator("g.column").count() == 30
    ten_days_ago = operated.hours[2].hour.replace(hour=0)
    assert _column(listener, ten_days_ago).get_attribute("data-unproven") == "4"
    pinned = page.locator("svg.decisions-chart").nth(1)
    three_days_ago = operated.hours[3].hour.replace(hour=0)
    assert _column(pinned, three_days_ago).get_attribute("data-reject") == "3"
    page.locator("figure.chart").nth(1).locator("figcaption a", has_text="reject").first.click()
    assert f"endpoint={PINNED}" in page.url and "since=30d" in page.url
    assert page.locator("select[name=endpoint]").input_value() == PINNED
    page.goto(operated.origin + "/?window=30d")
    page.locator("#decisions-over-time").screenshot(path=str(OUTPUT / "decisions-30d.png"))
    assert elsewhere == []


def test_the_certificate_timeline_shows_the_pinned_rotation_weeks_ahead(browser, operated):
    page, elsewhere = _page(browser, operated.origin)
    page.goto(operated.origin + "/")
    rows = page.locator("svg.expiry-timeline g.expiry-row")
    leaves = [row for row in rows.all() if row.get_attribute("data-role") == "client certificate"]
    days = [int(row.get_attribute("data-days-left")) for row in leaves]
    assert days == sorted(days)  # soonest first
    rotating = leaves[0]
    assert "rotating.client.test" in rotating.text_content()
    assert days[0] == 20 and "tone-soon" in rotating.get_attribute("class")
    assert rotating.get_attribute("data-pinned-on") == PINNED
    assert "expires in 20 days" in rotating.text_content()
    assert f"pinned on {PINNED}" in rotating.text_content()
    names = " ".join(row.text_content() for row in leaves)
    assert "valid.client.test" in names and "untrusted.client.test" in names  # senders
    assert "expired.client.test" not in names  # it connected, and sent nothing
    page.locator("#certificate-expiry").screenshot(path=str(OUTPUT / "certificate-expiry.png"))
    rotating.locator("text").first.click()
    assert page.url == f"{operated.origin}/chains/{operated.run.key('rotating')}"
    assert elsewhere == []


# item 14 ----------------------------------------------------------------------------------

def _labels_clear_of_curves(page) -> list[str]:
    """The arrow labels of the chain picture that a curve runs through."""
    return page.evaluate("""() => {
        const paths = [...document.querySelectorAll("svg.chain-picture g.arrow path")];
        const crossed = [];
        for (const label of document.querySelectorAll("svg.chain-picture g.arrow text")) {
            const box = label.getBBox();
            for (const path of paths) {
                for (let at = 0; at <= path.getTotalLength(); at += 1) {
                    const point = path.getPointAtLength(at);
                    if (point.x >= box.x - 1 && point.x <= box.x + box.width + 1 &&
                        point.y >= box.y - 1 && point.y <= box.y + box.height + 1) {
                        crossed.push(label.textContent);
                        return crossed;
                    }
                }
            }
        }
        return crossed;
    }""")


def test_a_narrow_screen_gets_the_whole_console_without_sideways_scrolling(browser, operated):
    page, elsewhere = _page(browser, operated.origin, viewport=NARROW)
    dead = _stored_ids(operated.database, DEAD)[0]
    for path, name in [("/", "overview"), ("/chains", "chains"), ("/inbox", "inbox"),
                       (f"/inbox/{dead}", "notification"),
                       (f"/chains/{operated.run.key('misordered')}", "chain")]:
        page.goto(operated.origin + path)
        width = page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= NARROW["width"], (path, width)
        header = page.locator("header").bounding_box()
        assert header["width"] == NARROW["width"], path  # the navigation spans the page
        for table in page.locator("main table").all():
            box = table.bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= NARROW["width"], path
        _screenshot(page, f"narrow-{name}.png", full_page=name != "inbox")  # 100 cards
    assert _labels_clear_of_curves(page) == []
    assert elsewhere == []


def test_the_chain_pictures_labels_leave_its_arrows_clear(browser, console):
    _server, run, origin = console
    page, _elsewhere = _page(browser, origin)
    page.goto(f"{origin}/chains/{run.key('misordered')}")
    assert page.locator("svg.chain-picture g.arrow").count() == 2
    assert _labels_clear_of_curves(page) == []
