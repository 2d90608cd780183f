"""Handing stored notifications downstream, at least once, with retries."""

from __future__ import annotations

import os
from collections.abc import Mapping

from service.config import DeliveryConfig, WebhookHeader
from service.delivery.targets import DeliveryFailed, Target, handler
from service.delivery.worker import DeliveryWorker, backoff
from service.envtext import MissingVariable


def delivery_target(config: DeliveryConfig, environ: Mapping[str, str] = os.environ) -> Target:
    """The configured target: the handler when set, else the webhook. A ValueError's
    message starts with the ``[delivery]`` key that cannot be used."""
    if config.handler:
        try:
            # room for calls that outlived their attempt beside a full batch of new ones
            return handler(config.handler, max_threads=2 * config.concurrency)
        except ValueError as error:
            raise ValueError(f"handler: {error}") from None
    # here, not at the top: httpx costs each worker about 3 MiB that a server without a
    # webhook never uses
    from service.delivery.webhook import Webhook, WebhookOptions, WebhookTls

    tls = WebhookTls(config.webhook_ca, config.webhook_client_cert, config.webhook_client_key)
    if config.webhook_client_key is not None and config.webhook_client_cert is None:
        raise ValueError("webhook_client_key: set webhook_client_cert too")
    return Webhook(config.webhook_url, WebhookOptions(
        headers=rendered_headers(config.webhook_headers, environ), tls=tls,
        max_connections=config.concurrency, timeout=config.timeout))


def rendered_headers(headers: tuple[WebhookHeader, ...],
                     environ: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """The webhook headers with their environment variables read."""
    rendered = []
    for header in headers:
        try:
            value = header.value.render(environ)
        except MissingVariable as error:
            raise ValueError(f"webhook_headers {header.name}: {error}") from None
        if any(character in value for character in "\r\n\0"):
            raise ValueError(f"webhook_headers {header.name}: the environment gives a value "
                             "of more than one line")
        rendered.append((header.name, value))
    return tuple(rendered)


__all__ = ["DeliveryFailed", "DeliveryWorker", "Target", "backoff", "delivery_target",
           "handler"]
