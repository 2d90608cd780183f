"""``omgate serve``: load everything, open the listeners, run until SIGTERM.

All listener setup lives here: HTTPS on ``server.bind`` through omgate's own
TLS front door, plain HTTP on ``server.plain_bind`` (for a balancer that
terminates TLS) and the health listener on ``server.health_bind``, on sockets
the supervisor bound. SIGHUP (and a periodic file check) reloads the server
certificate without a restart (``service/certreload.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.app import (
    EndpointRuntime,
    ServiceState,
    build_endpoints,
    create_app,
    create_health_app,
    refusal_fault,
)
from service.budget import BodyBudget, BudgetRules
from service.certreload import CertificateReload
from service.clientauth import Policy
from service.clientauth.model import verification_digest
from service.collector import settle_garbage_collector
from service.config import BUILT_IN_DEFAULT, SCHEMA, Config, ConfigError
from service.connections import ConnectionLimits, OpenConnections, capped, descriptor_room
from service.console.auth import console_token
from service.delivery import DeliveryWorker, Target, delivery_target
from service.dsn import mask_dsn
from service.exitcodes import EXIT_INTERRUPTED, EXIT_OK
from service.forwarded import ForwardingSettings
from service.forwarded_cap import ForwardedClientCap
from service.gate import ClientAuthGate
from service.inbox import Inbox, MissingFolderError, open_inbox, sqlite_path
from service.inbox.chains import LISTENER
from service.listeners.connection import Deadlines
from service.listeners.framing import AnswerRefusal, HeadLimits, bodiless
from service.listeners.hypercorn_glue import Http11Config, hypercorn_config
from service.listeners.plain import PlainConnectionHandler
from service.listeners.proxy_header import OriginReader, ProxyProtocol, direct_origin
from service.listeners.serving import HttpServing
from service.logs import get_logger
from service.metrics import Metrics
from service.observatory.fingerprint import policy_fingerprint
from service.observatory.registry import ChainRegistry
from service.origin_middleware import ForwardedMiddleware
from service.policy_loader import PolicyLoader
from service.soap import NotificationSchema, WsdlError, load_wsdl
from service.sockets import LISTEN_BACKLOG, Listeners
from service.tls.context import ServerTls, TlsSettings, TlsSetupError
from service.tls.listener import TlsConnectionHandler
from service.tracker import ConnectionTracker, Handler

log = get_logger("omgate")
CANCEL_SECONDS = 2.0  # for cancelled delivery attempts to close their connections
LAST_FLUSH_SECONDS = 5.0  # for the chain registry's counts at shutdown


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


def inbox_folder_to_create(config: Config, *, create: bool) -> Path | None:
    """The folder of a SQLite inbox that is missing and that serve would create (None: it
    exists, or the inbox is PostgreSQL); a ConfigError when serve would refuse to start
    without it. A folder at an absolute path must exist (a mistyped URL would otherwise
    start an inbox nobody reads), unless ``create`` (``omgate serve
    --create-inbox-dir``). The built-in default's folder (omgate's state folder) and that
    of a URL relative to the configuration's folder (a project's layout, as ``omgate init``
    writes it) are created."""
    database = sqlite_path(config.inbox.url)
    if database is None or database.parent.is_dir():
        return None
    own = config.inbox.relative or config.origin("inbox", "url") == BUILT_IN_DEFAULT
    if not (create or own):
        raise config.error("inbox", "url", str(MissingFolderError(database)))
    return database.parent


def ready_inbox_folder(config: Config, *, create: bool) -> Path | None:
    """Before anything listens: the inbox's folder, created when serve may create it
    (:func:`inbox_folder_to_create`). Returns the folder created, if any: the
    ``inbox.location`` line says so."""
    folder = inbox_folder_to_create(config, create=create)
    if folder is None:
        return None
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as error:
        raise config.error("inbox", "url", f"cannot create the folder {folder}: "
                                           f"{error.strerror}") from None
    return folder


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


@dataclass(frozen=True)
class Prepared:
    """Everything built from the configuration that can fail, before anything listens."""

    endpoints: list[EndpointRuntime]
    listener_policy: Policy
    server_tls: ServerTls | None
    target: Target | None
    console_token: str | None = None  # server.admin_bind's token (None: none asked for)


def check_listening(config: Config) -> str | None:
    """What serve refuses before it loads any file but the console's token: nothing to
    listen on, a body the budget can never hold. Returns the console's token (None
    without ``server.admin_bind``)."""
    if not config.server.bind and not config.server.plain_bind:
        raise _config_error(config, "[server] bind and plain_bind are both empty; "
                                    "nothing would listen")
    _check_body_fits(config)
    return console_token(config) if config.server.admin_bind is not None else None


def prepare(config: Config) -> Prepared:
    """Load WSDLs, trust, pins, CRLs, the server certificate and the delivery target; every
    problem is a ConfigError naming the key and the file."""
    token = check_listening(config)
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


@dataclass(frozen=True)
class WorkerParts:
    """What one worker serves with: built from the configuration, shared by its listeners
    and its background tasks."""

    config: Config
    prepared: Prepared
    metrics: Metrics
    chains: ChainRegistry | None
    gate: ClientAuthGate
    inbox: Inbox
    state: ServiceState = field(default_factory=ServiceState)


def worker_main_app(parts: WorkerParts, connections: OpenConnections) -> Any:
    """The main app a worker serves (the public listeners'), from what it was built with."""
    return build_main_app(parts.config, parts.prepared.endpoints, parts.inbox, parts.state,
                          parts.gate, parts.metrics, connections, parts.chains)


async def build_worker_parts(config: Config, prepared: Prepared) -> WorkerParts:
    metrics = Metrics()
    chains = chain_registry(config, prepared, metrics)
    gate = ClientAuthGate(prepared.listener_policy, metrics,
                          outputs=(chains,) if chains is not None else ())
    return WorkerParts(config, prepared, metrics, chains, gate, await open_inbox_of(config))


@dataclass
class Listening:
    """The servers one worker accepts connections on, what serves them, and the server
    certificate's file check. At shutdown the public listeners close first, every
    connection is asked to finish, and the private ones (health, console) close last."""

    main: HttpServing  # the outbound-message endpoints: the TLS and plain listeners
    health: HttpServing
    console: HttpServing | None = None
    tracker: ConnectionTracker = field(default_factory=ConnectionTracker)
    public: list[asyncio.Server] = field(default_factory=list)
    private: list[asyncio.Server] = field(default_factory=list)
    certificate_watch: asyncio.Task[None] | None = None

    async def accept(self, handler: Handler, sockets: tuple[socket.socket, ...],
                     connections: OpenConnections, *, public: bool) -> None:
        """Accept on sockets the supervisor bound (shared by every worker)."""
        tracked = self.tracker.wrap(handler, connections)
        for sock in sockets:
            server = await asyncio.start_server(tracked, sock=sock, backlog=LISTEN_BACKLOG)
            (self.public if public else self.private).append(server)

    async def close(self, drain_seconds: float) -> None:
        for server in self.public:
            server.close()
        if self.certificate_watch is not None:
            self.certificate_watch.cancel()
        # Every connection is asked to finish now, idle keep-alive ones (a balancer's
        # health probes) included: they must not hold the exit until their idle timeout.
        for serving in (self.main, self.health, self.console):
            if serving is not None:
                await serving.terminate()
        await self.tracker.drain(drain_seconds)
        for server in self.private:
            server.close()


async def listen(parts: WorkerParts, listeners: Listeners, listening: Listening,
                 public: OpenConnections, private: OpenConnections) -> None:
    """Serve the main app on the TLS and plain listeners, the health app (and the console)
    on theirs."""
    config, prepared = parts.config, parts.prepared
    main, health = listening.main, listening.health
    if prepared.server_tls is not None:
        CertificateReload(prepared.server_tls, parts.metrics).track()
        tls_handler = build_tls_handler(config, prepared.server_tls, parts.gate, main,
                                        parts.metrics, public)
        await listening.accept(tls_handler, listeners.tls, public, public=True)
    plain = PlainConnectionHandler(main, capped(origin_reader(config), public))
    await listening.accept(plain, listeners.plain, public, public=True)
    health_handler = PlainConnectionHandler(health, capped(direct_origin, private))
    await listening.accept(health_handler, listeners.health, private, public=False)
    if listeners.admin:
        console = HttpServing(build_console_app(config, parts.inbox, prepared), health.config,
                              health.deadlines)
        listening.console = console
        console_handler = PlainConnectionHandler(console, capped(direct_origin, private))
        await listening.accept(console_handler, listeners.admin, private, public=False)


def watch_certificate(parts: WorkerParts) -> asyncio.Task[None] | None:
    """Reload the server certificate on SIGHUP, and when its files change. Without a TLS
    listener there is nothing to reload, and SIGHUP (``systemctl reload``, a reloader
    sidecar, the supervisor passing it on) must not end the worker, its default action."""
    server_tls, interval = parts.prepared.server_tls, parts.config.server.reload_check_seconds
    if server_tls is None:
        with contextlib.suppress(NotImplementedError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, lambda: None)
        return None
    reload = CertificateReload(server_tls, parts.metrics)
    reload.reload_on_sighup()
    return asyncio.create_task(reload.watch(interval)) if interval > 0 else None


@dataclass(frozen=True)
class BackgroundTasks:
    """What a worker runs beside its listeners, each only when configured: the chain
    registry's flushes, and delivery."""

    chain_flush: asyncio.Task[None] | None = None
    delivery: asyncio.Task[None] | None = None

    @classmethod
    def start(cls, parts: WorkerParts, stop: asyncio.Event, worker_index: int) -> BackgroundTasks:
        target = parts.prepared.target
        return cls(
            chain_flush=(None if parts.chains is None
                         else asyncio.create_task(parts.chains.run(parts.inbox, stop))),
            delivery=(None if target is None or worker_index != 0  # one deliverer per host
                      else asyncio.create_task(DeliveryWorker(
                          parts.inbox, target, parts.config.delivery, parts.metrics,
                          wake=parts.state.stored).run(stop))))

    async def stop(self, parts: WorkerParts) -> None:
        """Once the connections drained: delivery ends the attempts under way (bounded by
        delivery.timeout), and the chain registry flushes what they added."""
        if self.delivery is not None:
            _done, late = await asyncio.wait({self.delivery},
                                              timeout=parts.config.delivery.timeout + 5)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late, timeout=CANCEL_SECONDS)
        if parts.chains is not None:
            await _last_flush(parts.chains, parts.inbox, self.chain_flush)


def _listening(parts: WorkerParts, public: OpenConnections) -> Listening:
    """How the main app and the health app are served, before anything listens."""
    config = parts.config
    deadlines = Deadlines(request=config.server.request_timeout,
                          write=config.server.write_timeout)
    return Listening(HttpServing(worker_main_app(parts, public), http_config(config, refusal_fault),
                                 deadlines),
                     HttpServing(create_health_app(parts.inbox, parts.state, parts.metrics),
                                 http_config(config), deadlines))


async def serve(config: Config, listeners: Listeners, *, worker_index: int = 0,
                prepared: Prepared | None = None) -> int:
    """Serve until SIGTERM (exit status 0) or SIGINT (130, as after Ctrl-C); ``prepared``
    when the caller prepared already (in this process)."""
    parts = await build_worker_parts(config, prepared or prepare(config))
    limits = connection_limits(config, room_for_connections(config))
    public = OpenConnections(limits, parts.metrics)
    private = OpenConnections(limits, parts.metrics)  # the health listener's and the console's
    listening = _listening(parts, public)
    background = BackgroundTasks()
    stop = asyncio.Event()
    try:
        await listen(parts, listeners, listening, public, private)
        _install_signals(parts.state, stop)
        listening.certificate_watch = watch_certificate(parts)
        _log_started(config, parts.gate, worker_index)
        settle_garbage_collector()
        background = BackgroundTasks.start(parts, stop, worker_index)
        await stop.wait()
        # /readyz answers 503 from now on; keep serving while the balancer notices.
        await asyncio.sleep(min(config.server.drain_seconds, config.server.shutdown_timeout))
    finally:
        await listening.close(
            max(config.server.shutdown_timeout - config.server.drain_seconds, 1.0))
        await background.stop(parts)
        await parts.inbox.close()
        parts.gate.close()
        listening.tracker.closed.close()
        log.info("server.stopped")
    return EXIT_INTERRUPTED if parts.state.stop_signal == signal.SIGINT.name else EXIT_OK


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


def _install_signals(state: ServiceState, stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()

    def begin_shutdown(signame: str) -> None:
        log.info("server.draining", signal=signame)
        state.draining = True
        state.stop_signal = state.stop_signal or signame
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, begin_shutdown, signum.name)


def _log_started(config: Config, gate: ClientAuthGate, worker_index: int) -> None:
    log.info(
        "server.started",
        worker=worker_index,
        event_loop=type(asyncio.get_running_loop()).__module__.partition(".")[0],
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
