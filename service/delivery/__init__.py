"""Handing stored notifications downstream, at least once, with retries."""

from __future__ import annotations

from service.config import DeliveryConfig
from service.delivery.targets import DeliveryFailed, Target, handler, webhook
from service.delivery.worker import DeliveryWorker, backoff


def delivery_target(config: DeliveryConfig) -> Target:
    """The configured target: the handler when set, else the webhook."""
    if config.handler:
        # room for calls that outlived their attempt beside a full batch of new ones
        return handler(config.handler, max_threads=2 * config.concurrency)
    return webhook(config.webhook_url)


__all__ = ["DeliveryFailed", "DeliveryWorker", "Target", "backoff", "delivery_target",
           "handler", "webhook"]
