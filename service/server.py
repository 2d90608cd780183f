"""``omgate serve``: open the inbox, load WSDLs, and run the listeners until SIGTERM.

All listener setup lives here, so the TLS front door can be replaced without
touching the app: HTTPS on ``server.bind``, plain HTTP on ``server.plain_bind``
(for a balancer that terminates TLS) and the health listener on
``server.health_bind``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
from collections.abc import Coroutine
from typing import Any

from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config as HypercornConfig

from service.app import ServiceState, build_endpoints, create_app, create_health_app
from service.config import Config, ConfigError
from service.inbox import open_inbox
from service.logs import get_logger
from service.soap import NotificationSchema, WsdlError, load_wsdl

log = get_logger("omgate")

KEEP_ALIVE_SECONDS = 15
HANDSHAKE_TIMEOUT_SECONDS = 10


def check_server_certificate(config: Config) -> None:
    """Load the server chain and key once, so a bad file fails at start naming the key."""
    if not config.server.bind:
        return
    for key in ("certfile", "keyfile"):
        path = getattr(config.server, key)
        if not path.is_file():
            raise ConfigError(
                f"{config.source}: [server] {key}: file not found: {path} "
                "(run `omgate pki dev` for development certificates)"
            )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(config.server.certfile, config.server.keyfile)
    except (ssl.SSLError, OSError) as error:
        raise ConfigError(
            f"{config.source}: [server] certfile/keyfile: cannot use "
            f"{config.server.certfile} with {config.server.keyfile}: {error}"
        ) from None


def load_schemas(config: Config) -> dict[str, NotificationSchema | None]:
    schemas: dict[str, NotificationSchema | None] = {}
    for index, endpoint in enumerate(config.endpoints, start=1):
        if endpoint.wsdl is None:
            schemas[endpoint.path] = None
            continue
        try:
            schemas[endpoint.path] = load_wsdl(endpoint.wsdl)
        except WsdlError as error:
            raise ConfigError(f"{config.source}: [[endpoints]] #{index} wsdl: {error}") from None
    return schemas


def _hypercorn_config(config: Config, *, tls: bool) -> HypercornConfig:
    hyper = HypercornConfig()
    hyper.accesslog = None
    hyper.errorlog = logging.getLogger("hypercorn.error")
    hyper.graceful_timeout = config.server.shutdown_timeout
    hyper.read_timeout = int(config.server.read_timeout)
    hyper.keep_alive_timeout = KEEP_ALIVE_SECONDS
    hyper.ssl_handshake_timeout = HANDSHAKE_TIMEOUT_SECONDS
    hyper.bind = []
    hyper.insecure_bind = []
    if tls:
        hyper.bind = [str(address) for address in config.server.bind]
        hyper.insecure_bind = [str(address) for address in config.server.plain_bind]
        hyper.certfile = str(config.server.certfile)
        hyper.keyfile = str(config.server.keyfile)
    else:
        hyper.bind = [str(address) for address in config.server.plain_bind]
    return hyper


def _health_config(config: Config) -> HypercornConfig | None:
    if config.server.health_bind is None:
        return None
    hyper = _hypercorn_config(config, tls=False)
    hyper.bind = [str(config.server.health_bind)]
    hyper.graceful_timeout = 1
    return hyper


async def _run_until_done(
    servers: list[Coroutine[Any, Any, None]], shutdown: asyncio.Event
) -> None:
    """Run all listeners; if one fails (say its port is taken), stop the others too."""
    tasks = [asyncio.ensure_future(server) for server in servers]
    done, _pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    failed = [task for task in done if task.exception() is not None]
    if failed:
        shutdown.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    if failed:
        raise failed[0].exception()  # type: ignore[misc]


async def serve(config: Config) -> None:
    if not config.server.bind and not config.server.plain_bind:
        raise ConfigError(f"{config.source}: [server] bind and plain_bind are both empty; "
                          "nothing would listen")
    check_server_certificate(config)
    schemas = load_schemas(config)
    inbox = await open_inbox(config.inbox.url)
    state = ServiceState()
    shutdown = asyncio.Event()

    def begin_shutdown(signame: str) -> None:
        log.info("server.draining", signal=signame)
        state.draining = True
        shutdown.set()

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, begin_shutdown, signum.name)

    app = create_app(build_endpoints(config, schemas), inbox, state)
    servers = [hypercorn_serve(app, _hypercorn_config(config, tls=bool(config.server.bind)),
                               shutdown_trigger=shutdown.wait)]
    health = _health_config(config)
    if health is not None:
        servers.append(hypercorn_serve(create_health_app(inbox, state), health,
                                       shutdown_trigger=shutdown.wait))
    log.info(
        "server.started",
        https=[str(address) for address in config.server.bind],
        http=[str(address) for address in config.server.plain_bind],
        health=str(config.server.health_bind) if config.server.health_bind else None,
        endpoints=[endpoint.path for endpoint in config.endpoints],
        inbox=config.inbox.url,
        organizations=list(config.salesforce.organization_ids) or "any",
    )
    try:
        await _run_until_done(servers, shutdown)
    finally:
        await inbox.close()
        log.info("server.stopped")
