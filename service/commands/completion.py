"""``omgate completion``: the shell completion script of every command and option."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from service.commands.command import Command
from service.exitcodes import EXIT_OK

SHELLS = ("bash", "zsh")


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("shell", choices=SHELLS, metavar="SHELL", help=" or ".join(SHELLS))


def completion_command(command_line: Callable[[], argparse.ArgumentParser]) -> Command:
    """The command that prints the completion script of ``command_line()``, the whole
    parser (its file arguments complete as file names: ``arguments.add_file``)."""
    def run(args: argparse.Namespace) -> int:
        import shtab

        print(shtab.complete(command_line(), shell=args.shell))
        return EXIT_OK

    return Command(
        "completion", "print a shell completion script (bash or zsh)", _arguments, run,
        description="Print the completion script of omgate's commands and options for SHELL.",
        epilog="bash: source <(omgate completion bash), or save it in "
               "~/.local/share/bash-completion/completions/omgate. zsh: save it as _omgate in "
               "a folder of $fpath.",
    )
