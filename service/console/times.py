"""One way to show a moment in the console and the report: a ``<time>`` element.

Its text is the moment in UTC to the minute; its ``datetime`` attribute says it exactly
(UTC, ``Z``) and its title to the second. In the console, ``static/local-time.js`` rewrites
the text to the browser's local time in the same format and leaves the title (UTC on
hover); without the script (the standalone report, a browser without JavaScript) the UTC
text stays.
"""

from __future__ import annotations

import datetime as dt

from markupsafe import Markup

SHOWN = "%Y-%m-%d %H:%M UTC"
EXACT = "%Y-%m-%d %H:%M:%S UTC"
MACHINE = "%Y-%m-%dT%H:%M:%SZ"


def as_utc(value: dt.datetime | str) -> dt.datetime:
    """A moment as stored (a datetime, or ISO 8601 text from SQLite), in UTC; a naive one
    is taken to be UTC already, as the inbox writes them."""
    moment = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(value)
    if moment.tzinfo is None:
        return moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC)


def moment(value: dt.datetime | str | None) -> Markup:
    """``<time datetime="...Z" title="... UTC">... UTC</time>``; nothing for None."""
    if value is None or value == "":
        return Markup("")
    utc = as_utc(value)
    return Markup('<time datetime="{}" title="{}">{}</time>').format(
        utc.strftime(MACHINE), utc.strftime(EXACT), utc.strftime(SHOWN))
