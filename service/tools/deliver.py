"""``omgate deliver``: the delivery worker without the listeners."""

from __future__ import annotations

import asyncio
import signal

from service.config import Config, ConfigError
from service.delivery import DeliveryWorker
from service.logs import get_logger
from service.metrics import Metrics
from service.server import delivery_target_of, open_inbox_of

log = get_logger("omgate")


async def run_delivery(config: Config) -> int:
    if not config.delivery.enabled:
        raise ConfigError(f"{config.source}: [delivery] webhook_url and handler are both "
                          "empty: there is nowhere to deliver to")
    target = delivery_target_of(config)
    inbox = await open_inbox_of(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await DeliveryWorker(inbox, target, config.delivery, Metrics()).run(stop)
    finally:
        await inbox.close()
    return 0
