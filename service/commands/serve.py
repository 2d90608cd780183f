"""``omgate serve``: receive, store and acknowledge outbound messages."""

from __future__ import annotations

import argparse
import sys

from service.commands.arguments import add_config, load
from service.commands.command import Command
from service.exitcodes import EXIT_USAGE
from service.logs import configure_logging


def _arguments(parser: argparse.ArgumentParser) -> None:
    add_config(parser)
    parser.add_argument("--create-inbox-dir", action="store_true",
                        help="create the folder of a SQLite inbox.url when it does not exist "
                             "(without it, a missing folder stops the start: it may be a typo)")


def _run(args: argparse.Namespace) -> int:
    from service.supervisor import serve_processes
    from service.tools.check import refuse_conflicts, warn_readable_secrets

    config = load(args)
    configure_logging(config.logging.format, config.logging.level)
    if refuse_conflicts(config, sys.stderr):
        return EXIT_USAGE
    warn_readable_secrets(config)
    return serve_processes(config, create_inbox_folder=args.create_inbox_dir)


COMMAND = Command(
    "serve", "receive, store and acknowledge outbound messages", _arguments, _run,
    description="Serve the configured endpoints until SIGTERM or Ctrl-C. Every key of the "
                "configuration can be overridden by OMGATE_<SECTION>__<KEY>, "
                "e.g. OMGATE_SERVER__BIND='[\"0.0.0.0:8443\"]'.",
)
