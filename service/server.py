"""``omgate serve``: load everything, open the listeners, run until SIGTERM.

All listener setup lives here: HTTPS on ``server.bind`` through omgate's own
TLS front door, plain HTTP on ``server.plain_bind`` (for a balancer that
terminates TLS) and the health listener on ``server.health_bind``, on sockets
the supervisor bound. SIGHUP (and
a periodic file check) reloads the server certificate without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.app import (
    EndpointRuntime,
    ForwardedClientCap,
    ServiceState,
    build_endpoints,
    create_app,
    create_health_app,
    refusal_fault,
)
from service.budget import BodyBudget, BudgetRules
from service.clientauth import Policy
from service.clientauth.model import verification_digest
from service.collector import ClosedConnections, settle_garbage_collector
from service.config import BUILT_IN_DEFAULT, SCHEMA, Config, ConfigError
from service.connections import (
    ConnectionLimits,
    OpenConnections,
    descriptor_room,
)
from service.console.auth import console_token
from service.delivery import DeliveryWorker, Target, delivery_target
from service.dsn import mask_dsn
from service.exitcodes import EXIT_INTERRUPTED, EXIT_OK
from service.forwarded import ForwardingSettings, format_address, parse_address
from service.forwarded.origin import ConnectionOrigin
from service.gate import ClientAuthGate
from service.inbox import Inbox, MissingFolderError, open_inbox, sqlite_path
from service.inbox.chains import LISTENER
from service.listeners.framing import AnswerRefusal, HeadLimits, bodiless
from service.listeners.http11 import Http11Config
from service.listeners.hypercorn_glue import Deadlines, HttpServing, hypercorn_config
from service.listeners.plain import PlainConnectionHandler
from service.listeners.proxy_header import OriginReader, ProxyProtocol, direct_origin
from service.logs import get_logger
from service.metrics import Metrics
from service.observatory.fingerprint import policy_fingerprint
from service.observatory.registry import ChainRegistry
from service.origin_middleware import ForwardedMiddleware
from service.policy_loader import PolicyLoader
from service.soap import NotificationSchema, WsdlError, load_wsdl
from service.supervisor import LISTEN_BACKLOG, Listeners
from service.tls.context import ServerTls, TlsSettings, TlsSetupError
from service.tls.listener import TlsConnectionHandler

log = get_logger("omgate")
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
CANCEL_SECONDS = 2.0  # for cancelled delivery attempts to close their connections
LAST_FLUSH_SECONDS = 5.0  # for the chain registry's counts at shutdown
UNCAPPED = sys.maxsize


def _config_error(config: Config, message: str) -> ConfigError:
    return ConfigError(f"{config.source}: {message}")


def load_schemas(config: Config) -> dict[str, NotificationSchema | None]:
    schemas: dict[str, NotificationSchema | None] = {}
    for index, endpoint in enumerate(config.endpoints, start=1):
        if endpoint.wsdl is None:
            schemas[endpoint.path] = None
            continue
        try:
            schemas[endpoint.path] = load_wsdl(endpoint.wsdl)
        except WsdlError as error:
            raise config.error("endpoints", f"#{index} wsdl", str(error)) from None
    return schemas


def build_server_tls(config: Config, policies: PolicyLoader) -> ServerTls:
    rules = config.client_auth.rules
    certfile, keyfile = config.server_identity()
    settings = TlsSettings(
        certfile=certfile,
        keyfile=keyfile,
        client_auth_mode=config.client_auth.mode,
        trusted=policies.trusted(rules),
        partial_chain=rules.trust_intermediates,
        verify_depth=rules.verify_depth,
        advertised_ca=policies.advertised(),
        refuse_in_handshake=config.client_auth.reject_with == "handshake",
        public_names=config.server.public_names,
    )
    try:
        return ServerTls(settings)
    except TlsSetupError as error:
        raise config.error("server", error.key, error.problem) from None


def delivery_target_of(config: Config) -> Target:
    try:
        return delivery_target(config.delivery)
    except ValueError as error:  # its message starts with the [delivery] key it is about
        named, _, problem = str(error).partition(": ")
        if problem and named.split()[0] in SCHEMA["delivery"]:
            raise config.error("delivery", named, problem) from None
        raise _config_error(config, f"[delivery] {error}") from None


async def open_inbox_of(config: Config, *, group_commit: bool | None = None) -> Inbox:
    """The configured inbox; its folder must exist (``ready_inbox_folder`` creates it when
    omgate may), or the error names inbox.url and where it was set."""
    try:
        return await open_inbox(
            config.inbox.url, pool_size=config.inbox.pool_size, create_folder=False,
            group_commit=config.inbox.group_commit if group_commit is None else group_commit)
    except MissingFolderError as error:
        raise config.error("inbox", "url", str(error)) from None


def ready_inbox_folder(config: Config, *, create: bool) -> Path | None:
    """Before anything listens: the folder of a SQLite inbox at an absolute path must exist
    (a mistyped URL would otherwise start an inbox nobody reads), unless ``create``
    (``omgate serve --create-inbox-dir``). The built-in default's folder (omgate's state
    folder) and that of a URL relative to the configuration's folder (a project's layout,
    as ``omgate init`` writes it) are created. Returns the folder created, if any: the
    ``inbox.location`` line says so."""
    database = sqlite_path(config.inbox.url)
    if database is None or database.parent.is_dir():
        return None
    own = config.inbox.relative or config.origin("inbox", "url") == BUILT_IN_DEFAULT
    if not (create or own):
        raise config.error("inbox", "url", str(MissingFolderError(database)))
    try:
        database.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as error:
        raise config.error("inbox", "url", f"cannot create the folder {database.parent}: "
                                           f"{error.strerror}") from None
    return database.parent


def log_inbox_location(config: Config, created: Path | None) -> None:
    """Where notifications are stored, resolved, and who said so (``inbox.location``)."""
    database = sqlite_path(config.inbox.url)
    log.info("inbox.location", backend="sqlite" if database else "postgresql",
             location=str(database) if database else mask_dsn(config.inbox.url).shown,
             set_by=config.origin("inbox", "url"),
             created_folder=str(created) if created else None)


def origin_reader(config: Config) -> OriginReader:
    """PROXY protocol from trusted proxies when server.proxy_protocol is on."""
    if not config.server.proxy_protocol:
        return direct_origin
    return ProxyProtocol(config.server.trusted_proxies, config.server.handshake_timeout).origin


def capped(read_origin: OriginReader, connections: OpenConnections) -> OriginReader:
    """``read_origin``, then a refusal (None) when the client it names already holds
    server.max_connections_per_peer connections; its claim ends with the connection."""
    async def read(reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                   ) -> ConnectionOrigin | None:
        origin = await read_origin(reader, writer)
        if origin is None:
            return None
        client = origin.client or origin.peer
        address = parse_address(client[0]) if client else None
        if not connections.claim(address):
            connections.log_refusal("max_connections_per_peer", origin.label())
            return None
        task = asyncio.current_task()
        if task is not None:
            task.add_done_callback(lambda _task: connections.release(address))
        return origin

    return read


def connection_limits(config: Config, total: int) -> ConnectionLimits:
    return ConnectionLimits(total, config.server.max_connections_per_peer,
                            config.server.trusted_proxies)


def build_tls_handler(config: Config, server_tls: ServerTls, gate: ClientAuthGate,
                      serving: HttpServing, metrics: Metrics | None = None,
                      connections: OpenConnections | None = None) -> TlsConnectionHandler:
    settings = server_tls.settings
    advertised = settings.advertised_ca
    return TlsConnectionHandler(
        server_tls=server_tls, gate=gate, serving=serving,
        handshake_timeout=config.server.handshake_timeout,
        refuse_in_handshake=config.client_auth.reject_with == "handshake",
        advertised_ca_names=tuple(c.subject.rfc4514_string() for c in advertised),
        metrics=metrics,
        read_origin=(origin_reader(config) if connections is None
                     else capped(origin_reader(config), connections)),
        verified_under=verification_digest(settings.trusted, settings.partial_chain,
                                           settings.verify_depth),
    )


def http_config(config: Config, answer_refusal: AnswerRefusal = bodiless) -> Http11Config:
    """How a listener serves HTTP/1.1: its timeouts, the limits of a request head
    (server.max_header_count; the headers client_auth.forwarded_cert reads may take the
    whole head) and how a request refused for them is answered."""
    forwarded = config.client_auth.forwarded_cert
    limits = HeadLimits(max_header_count=config.server.max_header_count,
                        long_headers=frozenset(name.encode() for name in
                                               (forwarded.headers if forwarded else ())))
    return hypercorn_config(read_timeout=config.server.read_timeout,
                            graceful_timeout=config.server.shutdown_timeout,
                            idle_timeout=config.server.idle_timeout,
                            head_limits=limits, answer_refusal=answer_refusal)


def budget_rules(config: Config) -> BudgetRules:
    return BudgetRules(config.server.max_buffered_bytes,
                       config.server.max_buffered_bytes_per_client)


def _check_body_fits(config: Config) -> None:
    """A body the budget can never hold whole would be refused (503) on every retry."""
    largest = budget_rules(config).largest_body
    if config.server.max_body_bytes > largest:
        raise config.error(
            "server", "max_body_bytes",
            f"{config.server.max_body_bytes} is more than one body can ever be given "
            f"({largest}: max_buffered_bytes_per_client, and three quarters of "
            "max_buffered_bytes)")


def build_main_app(config: Config, endpoints: list[EndpointRuntime], inbox: Inbox,
                   state: ServiceState, gate: ClientAuthGate, metrics: Metrics,
                   connections: OpenConnections, chains: ChainRegistry | None) -> Any:
    forwarding = ForwardingSettings(config.server.trusted_proxies,
                                    config.client_auth.forwarded_cert,
                                    config.server.client_address_header)
    budget = BodyBudget(budget_rules(config), config.server.read_timeout)
    app = create_app(endpoints, inbox, state, gate, metrics, budget, chains)
    return ForwardedMiddleware(ForwardedClientCap(app, connections), forwarding)


def chain_registry(config: Config, prepared: Prepared, metrics: Metrics) -> ChainRegistry | None:
    """The registry of client chains seen (none when no certificate is asked for)."""
    if prepared.listener_policy.mode == "off" or not config.chains.enabled:
        return None
    fingerprints = {LISTENER: policy_fingerprint(prepared.listener_policy)}
    fingerprints |= {endpoint.config.path: policy_fingerprint(endpoint.policy)
                     for endpoint in prepared.endpoints if endpoint.policy is not None}
    return ChainRegistry(config.chains, fingerprints, metrics)


@dataclass
class ConnectionTracker:
    """Remembers running connection tasks, so shutdown can wait for them, and has what
    each held freed soon after it closes."""

    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    closed: ClosedConnections = field(default_factory=ClosedConnections)

    def wrap(self, handler: Handler, connections: OpenConnections | None = None) -> Handler:
        """``handler``, for at most ``connections.limits.total`` connections at once (when
        given): the next is closed before anything is read."""
        connections = connections or OpenConnections(ConnectionLimits(UNCAPPED, UNCAPPED))

        async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                if connections.enter():
                    await self._serve(handler, reader, writer, connections)
                else:
                    connections.log_refusal("max_connections",
                                            format_address(writer.get_extra_info("peername")))
                    writer.close()
            finally:
                self.closed.closed()

        return tracked

    async def _serve(self, handler: Handler, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter, connections: OpenConnections) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        try:
            await handler(reader, writer)
        except Exception:
            log.exception("connection.failed")
            writer.close()
        finally:
            connections.leave()

    async def drain(self, timeout: float) -> None:
        if not self.tasks:
            return
        _done, pending = await asyncio.wait(set(self.tasks), timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            log.warning("server.shutdown_timeout", cancelled_connections=len(pending))
            await asyncio.gather(*pending, return_exceptions=True)


async def _serve_on(handler: Handler, sockets: tuple[socket.socket, ...]
                   ) -> list[asyncio.Server]:
    """Accept on sockets the supervisor bound (shared by every worker)."""
    return [await asyncio.start_server(handler, sock=sock, backlog=LISTEN_BACKLOG)
            for sock in sockets]


def _track_certificate(server_tls: ServerTls, metrics: Metrics) -> None:
    metrics.server_certificate(server_tls.settings.certfile, server_tls.not_after)


def _reload_tls(server_tls: ServerTls, metrics: Metrics, trigger: str) -> None:
    try:
        server_tls.reload()
    except TlsSetupError as error:
        log.error("tls.reload_failed", trigger=trigger, reason=str(error),
                  detail="keeping the certificate already loaded")
    else:
        _track_certificate(server_tls, metrics)
        log.info("tls.reloaded", trigger=trigger, certfile=str(server_tls.settings.certfile))


async def _watch_certificate(server_tls: ServerTls, metrics: Metrics, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        if server_tls.files_changed():
            _reload_tls(server_tls, metrics, "file_change")


@dataclass(frozen=True)
class Prepared:
    """Everything built from the configuration that can fail, before anything listens."""

    endpoints: list[EndpointRuntime]
    listener_policy: Policy
    server_tls: ServerTls | None
    target: Target | None
    console_token: str | None = None  # server.admin_bind's token (None: none asked for)


def prepare(config: Config) -> Prepared:
    """Load WSDLs, trust, pins, CRLs, the server certificate and the delivery target; every
    problem is a ConfigError naming the key and the file."""
    if not config.server.bind and not config.server.plain_bind:
        raise _config_error(config, "[server] bind and plain_bind are both empty; "
                                    "nothing would listen")
    _check_body_fits(config)
    token = console_token(config) if config.server.admin_bind is not None else None
    policies = PolicyLoader(config)
    endpoints = build_endpoints(config, load_schemas(config), policies.endpoint_policies())
    server_tls = build_server_tls(config, policies) if config.server.bind else None
    target = delivery_target_of(config) if config.delivery.enabled else None
    return Prepared(endpoints, policies.listener_policy(), server_tls, target, token)


def build_console_app(config: Config, inbox: Inbox, prepared: Prepared) -> Any:
    """The console for server.admin_bind: the listener's policy, and the same rules in
    require mode (what enforcement would do)."""
    from service.console.app import build_console

    policy = prepared.listener_policy
    return build_console(config, inbox, policy, dataclasses.replace(policy, mode="require"),
                         prepared.console_token,
                         {endpoint.config.path: endpoint.policy for endpoint in prepared.endpoints
                          if endpoint.policy is not None})


def room_for_connections(config: Config) -> int:
    """server.max_connections, or fewer when the open-files limit cannot hold them."""
    room = descriptor_room(config.server.max_connections)
    if room < config.server.max_connections:
        log.warning("server.descriptor_limit", max_connections=config.server.max_connections,
                    allowed=room, detail="the open-files limit (ulimit -n) holds only this "
                                         "many connections; raise it, or lower the key")
    return room


async def serve(config: Config, listeners: Listeners, *, worker_index: int = 0,
                prepared: Prepared | None = None) -> int:
    """Serve until SIGTERM (exit status 0) or SIGINT (130, as after Ctrl-C); ``prepared``
    when the caller prepared already (in this process)."""
    prepared = prepared or prepare(config)
    metrics = Metrics()
    chains = chain_registry(config, prepared, metrics)
    gate = ClientAuthGate(prepared.listener_policy, metrics,
                          outputs=(chains,) if chains is not None else ())
    endpoints, server_tls = prepared.endpoints, prepared.server_tls
    inbox = await open_inbox_of(config)
    state = ServiceState()
    limits = connection_limits(config, room_for_connections(config))
    public, private = OpenConnections(limits, metrics), OpenConnections(limits, metrics)
    hyper = http_config(config)  # the health listener's and the console's
    deadlines = Deadlines(request=config.server.request_timeout,
                          write=config.server.write_timeout)
    main = HttpServing(build_main_app(config, endpoints, inbox, state, gate, metrics, public,
                                      chains),
                       http_config(config, refusal_fault), deadlines)
    health = HttpServing(create_health_app(inbox, state, metrics), hyper, deadlines)
    tracker = ConnectionTracker()
    servers: list[asyncio.Server] = []
    health_servers: list[asyncio.Server] = []
    watcher: asyncio.Task[None] | None = None
    worker: asyncio.Task[None] | None = None
    flusher: asyncio.Task[None] | None = None
    console: HttpServing | None = None
    stop = asyncio.Event()
    try:
        if server_tls is not None:
            _track_certificate(server_tls, metrics)
            tls_handler = build_tls_handler(config, server_tls, gate, main, metrics, public)
            servers += await _serve_on(tracker.wrap(tls_handler, public), listeners.tls)
        plain = PlainConnectionHandler(main, capped(origin_reader(config), public))
        servers += await _serve_on(tracker.wrap(plain, public), listeners.plain)
        health_handler = PlainConnectionHandler(health, capped(direct_origin, private))
        health_servers += await _serve_on(tracker.wrap(health_handler, private),
                                          listeners.health)
        if listeners.admin:
            console = HttpServing(build_console_app(config, inbox, prepared), hyper,
                                  deadlines)
            console_handler = PlainConnectionHandler(console, capped(direct_origin, private))
            health_servers += await _serve_on(tracker.wrap(console_handler, private),
                                              listeners.admin)
        _install_signals(state, stop, server_tls, metrics)
        if server_tls is not None and config.server.reload_check_seconds > 0:
            watcher = asyncio.create_task(
                _watch_certificate(server_tls, metrics, config.server.reload_check_seconds))
        _log_started(config, gate, worker_index)
        settle_garbage_collector()
        if chains is not None:
            flusher = asyncio.create_task(chains.run(inbox, stop))
        if prepared.target is not None and worker_index == 0:  # one deliverer per host
            worker = asyncio.create_task(DeliveryWorker(
                inbox, prepared.target, config.delivery, metrics, wake=state.stored).run(stop))
        await stop.wait()
        # /readyz answers 503 from now on; keep serving while the balancer notices.
        await asyncio.sleep(min(config.server.drain_seconds, config.server.shutdown_timeout))
    finally:
        for server in servers:
            server.close()
        if watcher is not None:
            watcher.cancel()
        # Every connection is asked to finish now, idle keep-alive ones (a balancer's
        # health probes) included: they must not hold the exit until their idle timeout.
        for serving in (main, health, console):
            if serving is not None:
                await serving.terminate()
        remaining = config.server.shutdown_timeout - config.server.drain_seconds
        await tracker.drain(max(remaining, 1.0))
        for server in health_servers:
            server.close()
        if worker is not None:  # it stops after the attempts under way (bounded by timeout)
            _done, late = await asyncio.wait({worker}, timeout=config.delivery.timeout + 5)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late, timeout=CANCEL_SECONDS)
        if chains is not None:  # what the drained connections added, too
            await _last_flush(chains, inbox, flusher)
        await inbox.close()
        gate.close()
        tracker.closed.close()
        log.info("server.stopped")
    return EXIT_INTERRUPTED if state.stop_signal == signal.SIGINT.name else EXIT_OK


async def _last_flush(chains: ChainRegistry, inbox: Inbox,
                      flusher: asyncio.Task[None] | None) -> None:
    """The registry's last flush, bounded: an inbox that went away must not hold the exit."""
    if flusher is not None:
        flusher.cancel()
        await asyncio.gather(flusher, return_exceptions=True)
    try:
        await asyncio.wait_for(chains.flush(inbox), LAST_FLUSH_SECONDS)
    except TimeoutError:
        log.error("chains.flush_failed", reason=f"no answer from the inbox within "
                                                f"{LAST_FLUSH_SECONDS:g} s at shutdown")


def _install_signals(state: ServiceState, stop: asyncio.Event,
                     server_tls: ServerTls | None, metrics: Metrics) -> None:
    loop = asyncio.get_running_loop()

    def begin_shutdown(signame: str) -> None:
        log.info("server.draining", signal=signame)
        state.draining = True
        state.stop_signal = state.stop_signal or signame
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, begin_shutdown, signum.name)
    if server_tls is not None:
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signal.SIGHUP, _reload_tls, server_tls, metrics, "SIGHUP")


def _log_started(config: Config, gate: ClientAuthGate, worker_index: int) -> None:
    log.info(
        "server.started",
        worker=worker_index,
        https=[str(address) for address in config.server.bind],
        http=[str(address) for address in config.server.plain_bind],
        health=str(config.server.health_bind) if config.server.health_bind else None,
        console=str(config.server.admin_bind) if config.server.admin_bind else None,
        endpoints=[endpoint.path for endpoint in config.endpoints],
        inbox=mask_dsn(config.inbox.url).shown,
        organizations=list(config.salesforce.organization_ids) or "any",
        client_auth_mode=gate.policy.mode,
        reject_with=config.client_auth.reject_with,
        trust_anchors=[anchor.subject.rfc4514_string() for anchor in gate.policy.anchors],
    )
