"""The console's pages: overview (with its charts), chains, one chain (with its picture);
the inbox's are in ``inbox_pages``.

Server-rendered HTML (Jinja2) and SVG that work without JavaScript and load nothing from
elsewhere: a strict Content-Security-Policy on every answer, one stylesheet of its own and
one small script (times in the browser's local zone) that the pages do not need.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.certfiles import CertificateFileError, load_certificates
from service.clientauth import Policy, evaluate
from service.clientauth.summary import days_left
from service.config import Config
from service.console.auth import is_loopback_host, token_matches
from service.console.inbox_pages import inbox_routes
from service.console.queries import QueryReader
from service.console.rendering import HERE, render
from service.inbox import Inbox
from service.inbox.chains import CHAIN_OUTCOMES, ChainOutcome, ChainRecord
from service.observatory.charts import BUCKETS, WINDOWS, Window, decision_charts
from service.observatory.expiry import expiry_timeline
from service.observatory.fingerprint import describe_policy
from service.observatory.picture import draw_chain
from service.observatory.views import (
    chain_row,
    leaf_of,
    record_identity,
    select,
    valid_prefix,
)

CHAINS_SHOWN = 500
HOUR_ROWS = 50_000  # hourly counts a chart reads at most (30 days of 4 outcomes: 2880 an endpoint)
LISTENER_PINS = "the listener"
SECURITY_HEADERS = {
    # One script, static/local-time.js (times in the browser's zone), and nothing inline;
    # Trusted Types are required and no policy may be made, so no script can write markup.
    "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "img-src 'self'; form-action 'self'; frame-ancestors 'none'; "
                               "base-uri 'none'; require-trusted-types-for 'script'; "
                               "trusted-types 'none'",
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


def _server_days_left(config: Config, now: dt.datetime) -> int | None:
    if config.server.certfile is None:  # no TLS listener of its own: nothing to count down
        return None
    try:
        return days_left(load_certificates(config.server.certfile, "[server] certfile")[0], now)
    except (CertificateFileError, IndexError):
        return None


@dataclass(frozen=True)
class LastAccepted:
    """The last accepted client certificate's chain, and its days left."""

    chain_sha256: str
    days_left: int


def _last_accepted(records: list[ChainRecord], now: dt.datetime) -> LastAccepted | None:
    for record in records:  # the latest first
        if record.outcome == "accept":
            leaf = leaf_of(record_identity(record))
            return LastAccepted(record.chain_sha256, days_left(leaf, now)) \
                if leaf is not None else None
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
                  token: str | None,
                  endpoint_policies: Mapping[str, Policy] | None = None) -> ASGIApp:
    """``endpoint_policies``: the endpoints with rules of their own (their pins are named on
    the certificate timeline)."""
    configured = [item.path for item in config.endpoints]
    pins = {LISTENER_PINS: policy, **(endpoint_policies or {})}

    # Chains are judged and drawn in a thread: the console shares its worker's event loop
    # with the listener Salesforce's messages arrive on.
    async def overview(request: Request) -> Response:
        now = dt.datetime.now(dt.UTC)
        reader = QueryReader(request.query_params)
        window = cast(Window, reader.choice("window", WINDOWS, "showing the last 24h") or "24h")
        records = await inbox.chains(since=now - dt.timedelta(days=config.chains.retention_days),
                                     limit=CHAINS_SHOWN)
        decisions = await inbox.decisions_since(now - dt.timedelta(hours=24))
        hours = await inbox.decision_hours(BUCKETS[window].first(now), HOUR_ROWS)
        last_accepted, timeline = await run_in_threadpool(
            lambda: (_last_accepted(records, now), expiry_timeline(records, pins, now)))
        return render(request, "overview.html", {
            "mode": policy.mode, "policy_lines": describe_policy(policy),
            "server_days_left": _server_days_left(config, now), "last_accepted": last_accepted,
            "chains_cut_at": CHAINS_SHOWN if len(records) >= CHAINS_SHOWN else None,
            "decisions": [(outcome, decisions.get(outcome, 0)) for outcome in CHAIN_OUTCOMES],
            "charts": decision_charts(hours, configured, window, now), "window": window,
            "windows": WINDOWS, "hours_cut": len(hours) >= HOUR_ROWS, "hour_rows": HOUR_ROWS,
            "timeline": timeline,
            "stats": await inbox.stats(), "problems": reader.problems, "page": "overview"})

    async def chains(request: Request) -> Response:
        now = dt.datetime.now(dt.UTC)
        reader = QueryReader(request.query_params)
        outcome = cast(ChainOutcome | None,
                       reader.choice("outcome", CHAIN_OUTCOMES, "showing every outcome"))
        endpoint = reader.choice("endpoint", configured, "showing every endpoint")
        since_text, since = reader.duration("since", "7d")
        records = await inbox.chains(since=now - since, limit=CHAINS_SHOWN)
        listener_judged = {item.path for item in config.endpoints if item.client_auth is None}
        chosen = select(records, outcome=outcome, endpoint=endpoint,
                        listener_judged=listener_judged)
        rows = await run_in_threadpool(lambda: [chain_row(record, now) for record in chosen])
        return render(request, "chains.html", {
            "rows": rows, "outcomes": CHAIN_OUTCOMES,
            "chains_cut_at": CHAINS_SHOWN if len(records) >= CHAINS_SHOWN else None,
            "outcome": outcome, "endpoint": endpoint or "", "since": since_text,
            "endpoints": configured, "problems": reader.problems, "page": "chains"})

    async def one_chain(request: Request) -> Response:
        key = request.path_params["key"]
        matches = await inbox.chains_by_prefix(key) if valid_prefix(key) else []
        exact = [record for record in matches if record.chain_sha256 == key.lower()]
        if not exact:
            return render(request, "missing.html", {
                "what": "chain", "key": key, "back": "/chains", "page": "chains"}, 404)
        view = await run_in_threadpool(console_chain_view, require, exact[0],
                                       dt.datetime.now(dt.UTC))
        return render(request, "chain.html", {**view, "page": "chains"})

    app = Starlette(routes=[
        Route("/", overview, methods=["GET", "HEAD"]),
        Route("/chains", chains, methods=["GET", "HEAD"]),
        Route("/chains/{key}", one_chain, methods=["GET", "HEAD"]),
        *inbox_routes(inbox),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ])
    return ConsoleGuard(app, token)
