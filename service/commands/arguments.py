"""Arguments several subcommands take: ``--config``, files, positive counts and times."""

from __future__ import annotations

import argparse
import datetime as dt
import re
from pathlib import Path
from typing import Any, Protocol

import shtab

from service.config import CONFIG_SEARCH_PATHS, Config, load_config
from service.logs import configure_logging

CONFIG_HELP = ("configuration file (default: $OMGATE_CONFIG, else the first of "
               f"{', '.join(str(path) for path in CONFIG_SEARCH_PATHS)})")
AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class ArgumentContainer(Protocol):
    """A parser, or a group of its arguments."""

    def add_argument(self, *name_or_flags: str, **kwargs: Any) -> argparse.Action: ...


def add_file(container: ArgumentContainer, *name_or_flags: str, **kwargs: Any
             ) -> argparse.Action:
    """An argument that names a file: a Path, which shell completion completes as one."""
    action = container.add_argument(*name_or_flags, type=Path, **kwargs)
    # shtab's documented hook; argparse does not declare the attribute
    action.complete = shtab.FILE  # type: ignore[attr-defined]
    return action


def add_config(parser: argparse.ArgumentParser) -> None:
    add_file(parser, "--config", metavar="PATH", help=CONFIG_HELP)


def load(args: argparse.Namespace) -> Config:
    """The configuration ``--config`` names, else the first found."""
    return load_config(args.config)


def load_quietly(args: argparse.Namespace) -> Config:
    """The configuration, logging only warnings (to the console): for a tool whose output
    is what it was asked for."""
    config = load(args)
    configure_logging("console", "warning")
    return config


MAX_COUNT = 10**9  # of a count on the command line (SQLite takes no more than 64 bits)


def positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive whole number")
    if value > MAX_COUNT:
        raise argparse.ArgumentTypeError(f"{text} is more than {MAX_COUNT:,}")
    return value


def inbox_id(text: str) -> int:
    """An inbox id ("id" in ``omgate inbox list``)."""
    from service.inbox.model import inbox_id_of  # when read: building the parser is fast

    value = inbox_id_of(text.strip())
    if value is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not an inbox id (a positive whole "
                                         "number of at most 19 digits)")
    return value


def inbox_id_or_zero(text: str) -> int:
    """An inbox id, or 0 (from the start)."""
    from service.inbox.model import inbox_id_of

    value = inbox_id_of(text.strip(), least=0)
    if value is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not an inbox id (a whole number of at "
                                         "most 19 digits)")
    return value


# argparse names a type in the error for text it cannot convert ("invalid _positive value:
# 'x'"): this one keeps the name it has always been shown with.
positive.__name__ = "_positive"


def moment(text: str) -> dt.datetime:
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def since(text: str) -> dt.datetime:
    """``7d``, ``12h``, ``30m``, ``45s`` ago, or an ISO 8601 time."""
    age = re.fullmatch(r"(\d+)([smhd])", text.strip())
    if age is None:
        return moment(text)
    seconds = int(age.group(1)) * AGE_UNITS[age.group(2)]
    try:
        return dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds)
    except OverflowError:
        raise argparse.ArgumentTypeError(f"{text} reaches back before the year 1") from None
