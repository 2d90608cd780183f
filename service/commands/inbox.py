"""``omgate inbox``: read stored notifications as JSON, retry them, migrate the schema."""

from __future__ import annotations

import argparse
import asyncio
import sys

from service.commands.arguments import (
    add_config,
    inbox_id,
    inbox_id_or_zero,
    load_quietly,
    positive,
    since,
)
from service.commands.command import Command
from service.inbox import STATES


def _arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="inbox_command", required=True, metavar="ACTION")
    listing = actions.add_parser(
        "list", help="a JSON array of stored notifications",
        description="A JSON array of stored notifications, oldest first. When more match than "
                    "--limit, standard error says so and how to list the next ones.")
    add_config(listing)
    listing.add_argument("--limit", type=positive, default=100, metavar="N",
                         help="at most this many (100)")
    listing.add_argument("--since", type=since, metavar="TIME",
                         help="only notifications received since TIME: an ISO 8601 time, or "
                              "an age such as 30m, 12h or 7d")
    listing.add_argument("--after", type=inbox_id_or_zero, default=0, metavar="ID",
                         help="only notifications with an inbox id above ID (for paging)")
    listing.add_argument("--state", choices=STATES,
                         help="only notifications in this delivery state")
    listing.add_argument("--conflicts", action="store_true",
                         help="only notifications redelivered with other content (see "
                              "`inbox show ID` for what each redelivery said)")
    show = actions.add_parser(
        "show", help="one notification by its inbox id (and any conflicting redeliveries)")
    show.add_argument("id", type=inbox_id, metavar="ID",
                      help='the inbox id ("id" in `inbox list`)')
    add_config(show)
    export = actions.add_parser("export", help="every notification, as JSON Lines")
    add_config(export)
    retry = actions.add_parser(
        "retry", help="deliver a notification again (or every dead letter)",
        description="Make a notification pending delivery again, at once: one by its inbox id, "
                    "or with --dead every notification given up on.")
    which = retry.add_mutually_exclusive_group(required=True)
    which.add_argument("id", type=inbox_id, nargs="?", metavar="ID", help="an inbox id")
    which.add_argument("--dead", action="store_true", help="every dead letter")
    add_config(retry)
    migrate = actions.add_parser(
        "migrate", help="create or upgrade the inbox schema (omgate serve does it at start)")
    add_config(migrate)


def _run(args: argparse.Namespace) -> int:
    from service.tools import inbox

    config = load_quietly(args)
    match args.inbox_command:
        case "list":
            which = inbox.ListFilter(limit=args.limit, after_id=args.after, state=args.state,
                                     conflicted=args.conflicts, since=args.since)
            return asyncio.run(inbox.list_notifications(config, sys.stdout, sys.stderr, which))
        case "show":
            return asyncio.run(inbox.show_notification(config, sys.stdout, sys.stderr, args.id))
        case "retry":
            return asyncio.run(inbox.retry_notifications(config, sys.stdout, sys.stderr,
                                                         None if args.dead else args.id))
        case "migrate":
            return asyncio.run(inbox.migrate(config, sys.stdout))
        case _:
            return asyncio.run(inbox.export_notifications(config, sys.stdout))


COMMAND = Command(
    "inbox", "read stored notifications as JSON", _arguments, _run,
    description="Print stored notifications as JSON: organization, action, notification "
                "Id, sObject type, record Id, fields and received time.",
)
