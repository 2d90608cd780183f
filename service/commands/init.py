"""``omgate init``: a commented configuration to start from."""

from __future__ import annotations

import argparse
import os
import sys

from service.commands.arguments import add_file
from service.commands.command import Command
from service.config import CONFIG_SEARCH_PATHS
from service.exitcodes import EXIT_OK, EXIT_PROBLEMS


def _arguments(parser: argparse.ArgumentParser) -> None:
    add_file(parser, "dir", nargs="?", default=CONFIG_SEARCH_PATHS[0].parent, metavar="DIR",
             help=f"folder to write omgate.toml into (default {CONFIG_SEARCH_PATHS[0]}"
                  ", where omgate looks first)")


def _run(args: argparse.Namespace) -> int:
    from service.tools.init import InitError, make_inbox_folder, write_config, write_next_steps

    try:
        path = write_config(args.dir)
        inbox_folder = make_inbox_folder(path)
    except InitError as error:
        print(f"omgate init: {error}", file=sys.stderr)
        return EXIT_PROBLEMS
    write_next_steps(path, sys.stdout, os.environ, inbox_folder)
    return EXIT_OK


COMMAND = Command(
    "init", "write a commented configuration to start from", _arguments, _run,
    description="Write DIR/omgate.toml: every key with its comment, set up for the "
                "development certificates of `omgate pki dev`. An existing file is never "
                "overwritten.",
    epilog="Example: omgate init /etc/omgate",
)
