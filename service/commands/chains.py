"""``omgate chains``: the client chains seen: list, show, simulate a policy, pin."""

from __future__ import annotations

import argparse
import datetime as dt
import sys

from service.commands.arguments import add_config, add_file, load_quietly
from service.commands.command import Command


def duration(text: str) -> dt.timedelta:
    from service.observatory.views import parse_duration

    try:
        return parse_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _arguments(parser: argparse.ArgumentParser) -> None:
    from service.inbox.chains import CHAIN_OUTCOMES

    actions = parser.add_subparsers(dest="chains_command", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="the chains seen in a window")
    listing.add_argument("--since", type=duration, default=dt.timedelta(days=7),
                         metavar="AGE", help="seen within this long (7d; also 12h, 30m)")
    listing.add_argument("--outcome", choices=CHAIN_OUTCOMES,
                         help="only chains whose last decision had this outcome")
    listing.add_argument("--endpoint", metavar="PATH", help="only chains seen on this endpoint")
    listing.add_argument("--json", action="store_true", help="a JSON array")
    add_config(listing)
    show = actions.add_parser("show", help="one chain: what inspect says, where and when seen")
    show.add_argument("prefix", metavar="SHA256-PREFIX",
                      help="the start of its fingerprint (at least 4 hex digits), or none")
    show.add_argument("--pem", action="store_true", help="write the chain as PEM, as presented")
    show.add_argument("--json", action="store_true", help="everything as JSON")
    add_file(show, "--html", metavar="FILE",
             help="also write a self-contained HTML report with its picture")
    add_config(show)
    simulate = actions.add_parser(
        "simulate", help="decide every recorded chain under a candidate configuration",
        description="Decide every chain seen in the window under the --config file's policy "
                    "and say what would have been accepted and refused. Exit status 1 when "
                    "any chain seen would have been refused: a deploy gate.")
    simulate.add_argument("--since", type=duration, default=dt.timedelta(days=30),
                          metavar="AGE", help="chains seen within this long (30d)")
    simulate.add_argument("--mode", choices=("request", "optional", "require"),
                          help="decide in this mode instead of the configuration's")
    add_config(simulate)
    pin = actions.add_parser("pin", help="configuration lines that admit exactly one chain")
    pin.add_argument("prefix", metavar="SHA256-PREFIX", help="the start of its fingerprint")
    add_config(pin)


def _run(args: argparse.Namespace) -> int:
    from service.tools import chains

    config = load_quietly(args)
    match args.chains_command:
        case "list":
            return chains.list_chains(config, sys.stdout, since=args.since,
                                      outcome=args.outcome, endpoint=args.endpoint,
                                      as_json=args.json)
        case "show":
            return chains.show_chain(config, sys.stdout, sys.stderr, args.prefix, pem=args.pem,
                                     as_json=args.json, html=args.html)
        case "simulate":
            return chains.simulate_chains(config, sys.stdout, since=args.since,
                                          mode=args.mode)
        case _:
            return chains.pin_chain(config, sys.stdout, sys.stderr, args.prefix)


COMMAND = Command(
    "chains", "the client chains seen: list, show, simulate a policy, pin", _arguments, _run,
    description="Every client chain omgate has seen (TLS or forwarded), with its counts "
                "and last decisions, from the inbox database.",
)
