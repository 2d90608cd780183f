"""``omgate check``: the configuration and everything it points to, validated."""

from __future__ import annotations

import argparse
import sys

from service.commands.arguments import add_config, add_file, load, moment
from service.commands.command import Command


def _arguments(parser: argparse.ArgumentParser) -> None:
    add_config(parser)
    add_file(parser, "--trust", metavar="PEM",
             help="roots to check the server chain against (default: the public "
                  "roots of certifi, Mozilla's list)")
    parser.add_argument("--at", type=moment, metavar="TIME",
                        help="check as of this ISO 8601 time (say, the day of a deploy)")
    parser.add_argument("--json", action="store_true", help="findings as JSON")


def _run(args: argparse.Namespace) -> int:
    from service.tools.check import run_check

    return run_check(load(args), sys.stdout, trust=args.trust, as_json=args.json, now=args.at)


COMMAND = Command(
    "check", "validate the configuration and everything it points to", _arguments, _run,
    description="Check the server certificate chain the way Salesforce will see it "
                "(order, intermediates, expiry, key, server.public_names, a public root) "
                "and the client-certificate settings (files, pins, DNs, combinations). "
                "Exit status 0 clean, 1 errors found, 2 unusable configuration.",
    epilog="Example: omgate check --config /etc/omgate/omgate.toml",
)
