"""The console's pages: overview, chains, one chain (with its picture), inbox.

Server-rendered HTML (Jinja2) that works without JavaScript and loads nothing from
elsewhere: a strict Content-Security-Policy on every answer, one stylesheet of its own.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.certfiles import CertificateFileError, load_certificates
from service.clientauth import Policy, evaluate
from service.clientauth.summary import days_left
from service.config import Config
from service.console.auth import (
    CSRF_COOKIE,
    CSRF_FIELD,
    csrf_matches,
    is_loopback_host,
    new_csrf_token,
    token_matches,
)
from service.inbox import STATES, Inbox
from service.inbox.chains import CHAIN_OUTCOMES, ChainRecord
from service.observatory.picture import draw_chain
from service.observatory.policies import describe_policy
from service.observatory.views import (
    chain_row,
    leaf_of,
    parse_duration,
    record_identity,
    select,
    valid_prefix,
)

HERE = Path(__file__).parent
# Every template is escaped, the SVG picture too (Jinja's default escapes only files named
# .html, .htm and .xml): certificate names in it are whatever a client wrote.
TEMPLATES = Jinja2Templates(env=jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True))
CHAINS_SHOWN = 500
NOTIFICATIONS_SHOWN = 50
ID_PATTERN = re.compile(r"^[A-Za-z0-9]{15}([A-Za-z0-9]{3})?$")
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'none'; style-src 'self'; img-src 'self'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


class ConsoleGuard:
    """Asks for the token (when there is one) and adds the security headers."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app, self.token = app, token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if self.token is None and not is_loopback_host(headers.get(b"host", b"")
                                                       .decode("latin-1")):
            # without a token the console is for this machine's browser only
            response = PlainTextResponse("this console answers to localhost only\n",
                                         status_code=403, headers=SECURITY_HEADERS)
            await response(scope, receive, send)
            return
        authorization = headers.get(b"authorization", b"").decode("latin-1")
        if self.token is not None and not token_matches(self.token, authorization):
            response = PlainTextResponse("a token is needed (bearer, or the basic password)\n",
                                         status_code=401, headers={
                                             "www-authenticate": 'Basic realm="omgate console"',
                                             **SECURITY_HEADERS})
            await response(scope, receive, send)
            return

        async def secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []),
                                      *((name.encode(), value.encode())
                                        for name, value in SECURITY_HEADERS.items())]
            await send(message)

        await self.app(scope, receive, secured)


def _csrf(request: Request) -> tuple[str, bool]:
    """The CSRF token of this browser, and whether the cookie must be set."""
    existing = request.cookies.get(CSRF_COOKIE)
    return (existing, False) if existing else (new_csrf_token(), True)


def render(request: Request, template: str, context: dict[str, Any],
           status_code: int = 200) -> Response:
    token, fresh = _csrf(request)
    response = TEMPLATES.TemplateResponse(request, template,
                                          {**context, "csrf_token": token,
                                           "csrf_field": CSRF_FIELD},
                                          status_code=status_code)
    if fresh:
        response.set_cookie(CSRF_COOKIE, token, httponly=True, samesite="strict", path="/")
    return response


def _server_days_left(config: Config, now: dt.datetime) -> int | None:
    if config.server.certfile is None:  # no TLS listener of its own: nothing to count down
        return None
    try:
        return days_left(load_certificates(config.server.certfile, "[server] certfile")[0], now)
    except (CertificateFileError, IndexError):
        return None


def _last_accepted_days_left(records: list[ChainRecord], now: dt.datetime) -> int | None:
    for record in records:  # the latest first
        if record.outcome == "accept":
            leaf = leaf_of(record_identity(record))
            return days_left(leaf, now) if leaf is not None else None
    return None


def console_chain_view(require: Policy, record: ChainRecord,
                       now: dt.datetime) -> dict[str, Any]:
    """What the chain page and the standalone report show of one chain (``require``: the
    configured rules in require mode, what enforcement would do)."""
    identity = record_identity(record)
    decision = evaluate(identity, require, now)
    return {
        "row": chain_row(record, now),
        "picture": draw_chain(identity, decision, require, now),
        "findings": decision.findings,
        "require_refuses": not decision.accepted,
        "now": now,
    }


def build_console(config: Config, inbox: Inbox, policy: Policy, require: Policy,
                  token: str | None) -> ASGIApp:
    # Chains are judged and drawn in a thread: the console shares its worker's event loop
    # with the listener Salesforce's messages arrive on.
    async def overview(request: Request) -> Response:
        now = dt.datetime.now(dt.UTC)
        records = await inbox.chains(since=now - dt.timedelta(days=config.chains.retention_days),
                                     limit=CHAINS_SHOWN)
        decisions = await inbox.decisions_since(now - dt.timedelta(hours=24))
        return render(request, "overview.html", {
            "mode": policy.mode, "policy_lines": describe_policy(policy),
            "server_days_left": _server_days_left(config, now),
            "client_days_left": await run_in_threadpool(_last_accepted_days_left, records, now),
            "chains_cut_at": CHAINS_SHOWN if len(records) >= CHAINS_SHOWN else None,
            "decisions": [(outcome, decisions.get(outcome, 0)) for outcome in CHAIN_OUTCOMES],
            "stats": await inbox.stats(), "page": "overview"})

    async def chains(request: Request) -> Response:
        now = dt.datetime.now(dt.UTC)
        outcome = request.query_params.get("outcome") or None
        endpoint = request.query_params.get("endpoint") or None
        since_text = request.query_params.get("since") or "7d"
        try:
            since = parse_duration(since_text)
        except ValueError:
            since, since_text = dt.timedelta(days=7), "7d"
        records = await inbox.chains(since=now - since, limit=CHAINS_SHOWN)
        listener_judged = {item.path for item in config.endpoints if item.client_auth is None}
        chosen = select(records, outcome=outcome if outcome in CHAIN_OUTCOMES else None,
                        endpoint=endpoint, listener_judged=listener_judged)
        rows = await run_in_threadpool(lambda: [chain_row(record, now) for record in chosen])
        return render(request, "chains.html", {
            "rows": rows, "outcomes": CHAIN_OUTCOMES,
            "chains_cut_at": CHAINS_SHOWN if len(records) >= CHAINS_SHOWN else None,
            "outcome": outcome, "endpoint": endpoint or "", "since": since_text,
            "endpoints": [item.path for item in config.endpoints], "page": "chains"})

    async def one_chain(request: Request) -> Response:
        key = request.path_params["key"]
        matches = await inbox.chains_by_prefix(key) if valid_prefix(key) else []
        exact = [record for record in matches if record.chain_sha256 == key.lower()]
        if not exact:
            return render(request, "missing.html", {"key": key, "page": "chains"}, 404)
        view = await run_in_threadpool(console_chain_view, require, exact[0],
                                       dt.datetime.now(dt.UTC))
        return render(request, "chain.html", {**view, "page": "chains"})

    async def notifications(request: Request) -> Response:
        query = request.query_params.get("q", "").strip()
        state = request.query_params.get("state") or None
        key = query if ID_PATTERN.match(query) else None
        shown = await inbox.recent(limit=NOTIFICATIONS_SHOWN,
                                   state=state if state in STATES else None, key=key)
        dead = await inbox.recent(limit=NOTIFICATIONS_SHOWN, state="dead")
        return render(request, "inbox.html", {
            "notifications": shown, "dead": dead, "query": query, "state": state or "",
            "states": STATES, "bad_query": bool(query) and key is None, "page": "inbox"})

    async def retry(request: Request) -> Response:
        form = await request.form()
        if not csrf_matches(request.cookies.get(CSRF_COOKIE), str(form.get(CSRF_FIELD, ""))):
            return PlainTextResponse("the form's CSRF token does not match\n", status_code=403)
        await inbox.retry(int(request.path_params["inbox_id"]), dt.datetime.now(dt.UTC))
        return RedirectResponse("/inbox", status_code=303)

    app = Starlette(routes=[
        Route("/", overview, methods=["GET", "HEAD"]),
        Route("/chains", chains, methods=["GET", "HEAD"]),
        Route("/chains/{key}", one_chain, methods=["GET", "HEAD"]),
        Route("/inbox", notifications, methods=["GET", "HEAD"]),
        Route("/inbox/{inbox_id:int}/retry", retry, methods=["POST"]),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ])
    return ConsoleGuard(app, token)
