"""The ``omgate`` command line. Exit status: 0 fine, 1 problems found, 2 usage or config error
(or, for ``serve``, an address it cannot listen on), 130 after Ctrl-C, 141 when the reader
of the output went away (``omgate inbox export | head``). Each subcommand is declared in
its own module of ``service/commands/``; this one assembles them."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from service.build import build_info
from service.commands import (
    chains,
    check,
    deliver,
    inbox,
    init,
    inspect,
    manual,
    pki,
    probe,
    send,
    serve,
)
from service.commands.command import Command
from service.commands.completion import completion_command
from service.config import ConfigError
from service.exitcodes import (
    EXIT_BROKEN_PIPE,
    EXIT_INTERRUPTED,
    EXIT_PROBLEMS,
    EXIT_USAGE,
    UsageError,
)
from service.inbox import InboxError
from service.sockets import ListenError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="omgate",
        description="A receiving endpoint for Salesforce Outbound Messaging.",
        epilog="Start with `omgate init`, `omgate pki dev`, then `omgate serve`. The manual "
               "is installed with omgate: `omgate help` lists its topics, `omgate help TOPIC` "
               "shows one (e.g. `omgate help probe`).",
    )
    parser.add_argument("--version", action="version", version=build_info().line())
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_arguments(subparsers.add_parser(
            command.name, help=command.help, description=command.description,
            epilog=command.epilog))
    return parser


# in the order `omgate --help` lists them
COMMANDS: tuple[Command, ...] = (
    init.COMMAND, serve.COMMAND, inbox.COMMAND, deliver.COMMAND, inspect.COMMAND,
    check.COMMAND, probe.COMMAND, send.COMMAND, chains.COMMAND, pki.COMMAND, manual.COMMAND,
    completion_command(build_parser),
)
RUN = {command.name: command.run for command in COMMANDS}


def _quiet_stdout() -> None:
    """After the reader of standard output went away: point it at /dev/null, so that the
    interpreter's last flush does not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        code = RUN[args.command](args)
        sys.stdout.flush()  # here, where a closed pipe can still be caught
        return code
    except BrokenPipeError:
        _quiet_stdout()
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except ConfigError as error:
        print(f"omgate: configuration error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except UsageError as error:
        print(f"omgate {args.command}: {error}", file=sys.stderr)
        return EXIT_USAGE
    except ListenError as error:
        print(f"omgate {args.command}: {error}", file=sys.stderr)
        return EXIT_USAGE
    except InboxError as error:
        print(f"omgate: inbox error: {error}", file=sys.stderr)
        return EXIT_PROBLEMS


if __name__ == "__main__":
    sys.exit(main())
