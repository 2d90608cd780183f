"""A self-contained HTML report of one chain, to attach to a support case: the picture,
the findings with their fixes and where the chain was seen, with its stylesheet inline."""

from __future__ import annotations

import datetime as dt

from markupsafe import Markup

from service.config import Config
from service.console.app import console_chain_view
from service.console.rendering import HERE, TEMPLATES
from service.inbox.chains import ChainRecord
from service.policy_loader import PolicyLoader


def standalone_report(config: Config, record: ChainRecord, now: dt.datetime) -> str:
    require = PolicyLoader(config).policy(config.client_auth.rules, mode="require")
    view = console_chain_view(require, record, now)
    template = TEMPLATES.get_template("report.html")
    # the project's own file, inline as it is (escaped, its quoted selectors broke)
    stylesheet = Markup((HERE / "static" / "console.css").read_text())  # noqa: S704
    return template.render(**view, stylesheet=stylesheet, source=str(config.source))
