"""``omgate help``: the manual, its topics or one of them."""

from __future__ import annotations

import argparse
import sys

from service.commands.command import Command


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("topic", nargs="*", metavar="TOPIC",
                        help="a word or two of a section's title")


def _run(args: argparse.Namespace) -> int:
    from service.tools.manual import run_help

    return run_help(" ".join(args.topic) or None, sys.stdout, sys.stderr)


COMMAND = Command(
    "help", "the manual: its topics, or one of them", _arguments, _run,
    description="Show a section of omgate's manual (its README, installed with it): "
                "without TOPIC, the list of topics.",
    epilog="Example: omgate help probe",
)
