"""How a console page is answered: its template, its CSRF cookie and the notice an action
leaves for the page it redirects to."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from service.console.auth import CSRF_COOKIE, CSRF_FIELD, new_csrf_token
from service.console.times import moment

HERE = Path(__file__).parent
# Every template is escaped, the SVG pictures too (Jinja's default escapes only files named
# .html, .htm and .xml): certificate names in them are whatever a client wrote.
TEMPLATES = Jinja2Templates(env=jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True))
TEMPLATES.env.globals["moment"] = moment

# What an action did, told to the page it redirects to (Post/Redirect/Get): a cookie the
# next page reads once. Its value is parsed, never shown: only the numbers in it are.
NOTICE_COOKIE = "omgate_notice"
NOTICE = re.compile(r"^(retried|retried-all|not-retried):([0-9]{1,19})$")


def _csrf(request: Request) -> tuple[str, bool]:
    """The CSRF token of this browser, and whether the cookie must be set."""
    existing = request.cookies.get(CSRF_COOKIE)
    return (existing, False) if existing else (new_csrf_token(), True)


def notice_text(value: str | None) -> str | None:
    match = NOTICE.match(value or "")
    if match is None:
        return None
    kind, number = match[1], int(match[2])
    if kind == "retried":
        return f"Notification {number} is pending again: delivery tries it at once."
    if kind == "not-retried":
        return f"No notification has the inbox id {number}: nothing was retried."
    plural = "s are" if number != 1 else " is"
    return f"{number} dead letter{plural} pending again: delivery tries them from the oldest."


def render(request: Request, template: str, context: dict[str, Any],
           status_code: int = 200) -> Response:
    token, fresh = _csrf(request)
    notice = notice_text(request.cookies.get(NOTICE_COOKIE))
    response = TEMPLATES.TemplateResponse(request, template,
                                          {"problems": (), **context, "notice": notice,
                                           "csrf_token": token, "csrf_field": CSRF_FIELD},
                                          status_code=status_code)
    if fresh:
        response.set_cookie(CSRF_COOKIE, token, httponly=True, samesite="strict", path="/")
    if NOTICE_COOKIE in request.cookies:
        response.delete_cookie(NOTICE_COOKIE, path="/", httponly=True, samesite="strict")
    return response


def redirect_with_notice(url: str, notice: str) -> Response:
    """A 303 to ``url`` (always one of the console's own paths), carrying ``notice``."""
    response = RedirectResponse(url, status_code=303)
    response.set_cookie(NOTICE_COOKIE, notice, max_age=60, httponly=True, samesite="strict",
                        path="/")
    return response
