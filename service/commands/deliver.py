"""``omgate deliver``: the delivery worker alone, without listeners."""

from __future__ import annotations

import argparse
import asyncio

from service.commands.arguments import add_config, load
from service.commands.command import Command
from service.logs import configure_logging


def _run(args: argparse.Namespace) -> int:
    from service.tools.deliver import run_delivery

    config = load(args)
    configure_logging(config.logging.format, config.logging.level)
    return asyncio.run(run_delivery(config))


COMMAND = Command(
    "deliver", "run the delivery worker alone (no listeners)", add_config, _run,
    description="Hand stored notifications to [delivery] webhook_url or handler until "
                "SIGTERM, as omgate serve does; for running delivery separately.",
)
