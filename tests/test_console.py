"""The console on server.admin_bind, driven by a real Chromium (the distribution's, through
Playwright) against a running omgate; and its guards, with a plain HTTP client."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from harness import ROOT, free_port, require, require_executable, run_omgate
from observatory import mixed_cases, send_mixed_run

from service.inbox import open_inbox

TOKEN = "console-token-for-tests-0123456789"  # noqa: S105 - a test token
OUTPUT = Path(os.environ.get("OMGATE_TEST_OUTPUT") or ROOT / "tests" / "output")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync"]


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


def _screenshot(page, name: str) -> None:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(OUTPUT / name), full_page=True)


def _page(browser, origin: str):
    context = browser.new_context(http_credentials={"username": "admin", "password": TOKEN},
                                  viewport={"width": 1200, "height": 900})
    page = context.new_page()
    elsewhere: list[str] = []
    page.on("request", lambda request: None if request.url.startswith(origin + "/")
            else elsewhere.append(request.url))
    return page, elsewhere


def _dead_letter(database: Path) -> int:
    """Give up on the stored notification, as the delivery worker does after max_attempts."""
    async def give_up() -> int:
        inbox = await open_inbox(f"sqlite:///{database}", group_commit=False)
        try:
            [stored] = (await inbox.list(limit=1))
            await inbox.mark_failed(stored.id, "webhook answered 500", retry_at=None,
                                    now=dt.datetime.now(dt.UTC))
            return stored.id
        finally:
            await inbox.close()

    with ThreadPoolExecutor(1) as thread:  # Playwright's loop runs in this one
        return thread.submit(asyncio.run, give_up()).result()


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
    assert "default-src 'none'" in answer.headers["content-security-policy"]
    forged = httpx.post(origin + "/inbox/1/retry", data={"csrf": "guessed"},
                        headers={"Authorization": f"Bearer {TOKEN}"})
    assert forged.status_code == 403


def test_a_console_off_loopback_needs_a_token(tmp_path):
    config = tmp_path / "omgate.toml"
    config.write_text(f'[server]\nadmin_bind = "0.0.0.0:{free_port()}"\n'
                      f'[inbox]\nurl = "sqlite:///{tmp_path / "inbox.db"}"\n')
    result = run_omgate("serve", "--config", str(config), env={"OMGATE_ADMIN_TOKEN": ""})
    assert result.returncode == 2
    assert "admin_bind" in result.stderr and "token_file" in result.stderr
