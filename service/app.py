"""The ASGI application: routes, the outbound-message handler, health endpoints.

Order of work for a message: method and content type, bounded body read,
parse (and WSDL typing), organization and action allow-lists, one durable
store, then the acknowledgement. Every refusal is a SOAP fault whose
correlation id also appears in the ``om.rejected`` log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from service.budget import BodyBudget, BodyHold
from service.clientauth import Policy
from service.config import Config, EndpointConfig
from service.correlation import new_correlation_id
from service.forwarded import Address, Network, format_address, within
from service.gate import ClientAuthGate
from service.identity import RequestIdentity, request_identity, request_origin
from service.inbox import Inbox, InboxError, IncomingMessage
from service.listeners.framing import Refusal, RefusalAnswer
from service.logs import get_logger
from service.metrics import CONTENT_TYPE_LATEST as METRICS_CONTENT_TYPE
from service.metrics import Metrics
from service.observatory.registry import ChainRegistry, chain_key
from service.soap import (
    ACK,
    CLIENT_CERT_REFUSED,
    CONTENT_TYPE,
    NotificationSchema,
    OutboundMessage,
    SoapFaultError,
    fault,
    id_key,
    parse_message,
)
from service.terminal import escape_controls
from service.text import clipped

ACCEPTED_MEDIA_TYPES = frozenset({"text/xml", "application/xml"})
PARSE_IN_THREAD_BYTES = 256 * 1024
INBOX_STATS_SECONDS = 3.0  # a /metrics scrape waits no longer for the backlog figures
log = get_logger("omgate")


READINESS_FRESH_SECONDS = 1.0
# How long after a store failed for its storage's sake (a full disk) this worker says it is
# not ready, unless a store succeeds first: the write check alone passes on a full disk (it
# rolls back), and a load balancer should send the messages elsewhere meanwhile.
STORE_FAILURE_HOLD_SECONDS = 10.0


@dataclass
class InboxReadiness:
    """The inbox's last write check, the answer of every /readyz of this worker for a
    second: the public listeners answer anyone, and each check takes the inbox's write
    lock, which a flood of /readyz would hold against the stores. Callers that come while
    a check runs wait for that one. A store that failed because the storage did makes the
    worker not ready for STORE_FAILURE_HOLD_SECONDS after the last such failure; one that
    failed for its message's sake changes nothing (a message that cannot be stored, sent
    again and again, must not take every worker out)."""

    checked_at: float = -READINESS_FRESH_SECONDS  # time.monotonic()
    problem: str | None = None
    failed_store: str | None = None  # why the last store failed for its storage's sake
    failed_store_at: float = 0.0  # time.monotonic()
    _running: asyncio.Future[str | None] | None = field(default=None, repr=False)

    def store_failed(self, error: InboxError) -> None:
        if not error.storage:
            return
        if self.failed_store is None:
            log.warning("health.not_ready", reason="inbox_store_failed", detail=str(error))
        self.failed_store = f"inbox store failed: {error}"
        self.failed_store_at = time.monotonic()

    def store_succeeded(self) -> None:
        self.failed_store = None

    async def problem_now(self, inbox: Inbox) -> str | None:
        """Why the inbox cannot take a write (None: it can)."""
        if self.failed_store is not None:
            if time.monotonic() - self.failed_store_at < STORE_FAILURE_HOLD_SECONDS:
                return self.failed_store
            self.failed_store = None
        if time.monotonic() - self.checked_at < READINESS_FRESH_SECONDS:
            return self.problem
        if self._running is None:
            self._running = asyncio.ensure_future(self._check(inbox))
        return await asyncio.shield(self._running)

    async def _check(self, inbox: Inbox) -> str | None:
        problem = None
        try:
            await inbox.check_writable()
        except InboxError as error:  # its text names the inbox with the password masked
            log.warning("health.not_ready", reason="inbox_not_writable", detail=str(error))
            problem = f"inbox not writable: {error}"
        finally:
            self._running = None
        self.checked_at, self.problem = time.monotonic(), problem
        return problem


@dataclass
class ServiceState:
    """What changes while the process runs (the only mutable state the app shares)."""

    draining: bool = False
    stop_signal: str = ""  # the signal that began the shutdown (SIGINT: exit status 130)
    # Set when new notifications were stored, to wake the delivery worker.
    stored: asyncio.Event = field(default_factory=asyncio.Event)
    readiness: InboxReadiness = field(default_factory=InboxReadiness)


@dataclass(frozen=True)
class EndpointRuntime:
    config: EndpointConfig
    schema: NotificationSchema | None
    organization_keys: frozenset[str]
    action_keys: frozenset[str] = field(init=False)
    max_body_bytes: int = 10 * 1024 * 1024
    store_session_id: bool = False
    policy: Policy | None = None  # this endpoint's client-auth rules, when it overrides any
    allowed_networks: tuple[Network, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "action_keys", frozenset(map(id_key, self.config.action_ids)))


def _peer(request: Request) -> str | None:
    return format_address(request.client)


def _client_address(request: Request) -> Address | None:
    """The real client's address, as far as trusted proxies tell (None: unknown)."""
    origin = request_origin(request.scope.get("extensions") or {})
    return origin.client if origin else None


def _client_key(request: Request, client: Address | None) -> str:
    """Who a body counts against in the budget: the client address (``client``, from
    ``_client_address``), else the TCP peer."""
    if client is not None:
        return str(client)
    return request.client.host if request.client else "unknown"


_ACK_HEADERS = ((b"content-length", str(len(ACK)).encode()),
                (b"content-type", CONTENT_TYPE.encode()))


class Acknowledgement(Response):
    """The Ack, with its headers made once: Response's own constructor works them out
    anew for every message."""

    def __init__(self, correlation_id: str) -> None:  # Response.__init__ not called
        self.status_code = 200
        self.media_type = CONTENT_TYPE
        self.background = None
        self.body = ACK
        self.raw_headers = [(b"x-correlation-id", correlation_id.encode()), *_ACK_HEADERS]


def fault_response(error: SoapFaultError, correlation_id: str) -> Response:
    headers = {"X-Correlation-Id": correlation_id}
    if error.status == 405:
        headers["Allow"] = "POST"
    return Response(
        fault(error.fault_code, error.message, correlation_id),
        status_code=error.status,
        media_type=CONTENT_TYPE,
        headers=headers,
    )


def refusal_fault(refusal: Refusal) -> RefusalAnswer:
    """A request the HTTP layer refused before the app saw it (service/listeners/framing.py),
    answered as every sender's fault is: a ``soapenv:Client`` fault with a correlation id
    (the HTTP layer logs it in ``connection.request_refused``)."""
    correlation_id = new_correlation_id()
    return RefusalAnswer(((b"content-type", CONTENT_TYPE.encode()),
                          (b"x-correlation-id", correlation_id.encode())),
                         fault("Client", refusal.message, correlation_id), correlation_id)


def _check_request_line(request: Request) -> None:
    if request.method != "POST":
        raise SoapFaultError(
            "method_not_allowed",
            f"{clipped(request.method)} is not accepted here; Salesforce POSTs outbound "
            "messages.",
            status=405,
        )
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in ACCEPTED_MEDIA_TYPES:
        raise SoapFaultError(
            "unsupported_media_type",
            f"Content-Type {clipped(media_type) or '(none)'!r} is not accepted; "
            "send text/xml; charset=utf-8.",
            status=415,
        )


def _too_large(limit: int) -> SoapFaultError:
    return SoapFaultError(
        "body_too_large", f"The body is larger than {limit} bytes (server.max_body_bytes).",
        status=413,
    )


def declared_length(request: Request) -> int | None:
    """The body size Content-Length declares (None: chunked, or not a plain number)."""
    declared = request.headers.get("content-length", "")
    return int(declared) if declared.isdigit() else None


async def read_body(request: Request, limit: int, share: BodyHold) -> bytes:
    """Read the body, refusing as soon as it is known to exceed ``limit`` bytes; each
    chunk takes its room in the budget as it arrives."""
    if (declared_length(request) or 0) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        await share.take(len(chunk))
        chunks.append(chunk)
    return b"".join(chunks)


def _internal_error() -> SoapFaultError:
    return SoapFaultError("internal_error", "omgate failed to process the message; please retry.",
                          status=500, fault_code="Server")


def _declared_size(request: Request, limit: int) -> int:
    """The declared body size (a chunked body is counted as the largest allowed)."""
    declared = declared_length(request)
    return limit if declared is None else min(declared, limit)


async def discard_body(request: Request, limit: int) -> bool:
    """Read and drop an unread body, so the refusal reaches a client still sending it (closing
    on a half-sent body resets the connection). False when it is too large to wait for."""
    if (declared_length(request) or 0) > limit:
        return False
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                return False
    except (ClientDisconnect, RuntimeError):  # gone, or already partly read
        return False
    return True


def _check_allowed(message: OutboundMessage, endpoint: EndpointRuntime) -> None:
    if endpoint.organization_keys and id_key(message.organization_id) not in (
        endpoint.organization_keys
    ):
        raise SoapFaultError(
            "organization_not_allowed",
            f"Organization {message.organization_id} is not in salesforce.organization_ids.",
            status=403,
        )
    if endpoint.action_keys and id_key(message.action_id) not in endpoint.action_keys:
        raise SoapFaultError(
            "action_not_allowed",
            f"Action {message.action_id} is not in this endpoint's action_ids.",
            status=403,
        )


def _client_cert_refused() -> SoapFaultError:
    return SoapFaultError("client_cert_rejected", CLIENT_CERT_REFUSED, status=403)


class OutboundMessageHandler:
    """Receive, store and acknowledge one Salesforce outbound message."""

    def __init__(self, endpoint: EndpointRuntime, inbox: Inbox, gate: ClientAuthGate,
                 metrics: Metrics, state: ServiceState, budget: BodyBudget,
                 chains: ChainRegistry | None = None) -> None:
        self.chains = chains
        self.endpoint = endpoint
        self.inbox = inbox
        self.gate = gate
        self.metrics = metrics
        self.state = state
        self.budget = budget
        # what every acknowledged message counts, looked up once
        self._duration = metrics.request_duration.labels(endpoint.config.path)
        self._accepted = metrics.messages.labels("accepted", "")
        self._stored = {kind: metrics.notifications.labels(kind)
                        for kind in ("new", "duplicate", "conflict")}

    async def _parse(self, body: bytes) -> OutboundMessage:
        """Parse; a large body off the event loop, so other connections keep moving."""
        if len(body) < PARSE_IN_THREAD_BYTES:
            return parse_message(body, self.endpoint.schema)
        return await asyncio.to_thread(parse_message, body, self.endpoint.schema)

    async def _check_client(self, request: Request, client: Address | None,
                            peer: str | None) -> RequestIdentity | None:
        """Refuse a client (its address ``client``, its TCP peer ``peer``) outside
        allowed_client_networks, or one the policy refuses; the identity that applied
        (None: no certificate is asked for)."""
        allowed = self.endpoint.allowed_networks
        if allowed and not within(client, allowed):
            raise SoapFaultError(
                "client_address_not_allowed",
                f"Client address {client or '(unknown: the PROXY header names none)'} is not "
                "in server.allowed_client_networks.", status=403)
        if self.gate.policy.mode == "off":
            return None
        applied = await request_identity(request.scope.get("extensions") or {}, self.gate,
                                         self.endpoint.policy, self.endpoint.config.path,
                                         peer)
        if applied.verdict.refuse:
            raise _client_cert_refused()
        return applied

    async def handle(self, request: Request) -> Response:
        started = time.perf_counter()
        response = await self._handle(request)
        self._duration.observe(time.perf_counter() - started)
        return response

    async def _handle(self, request: Request) -> Response:
        correlation_id = new_correlation_id()
        # Every line about this request carries its id, client_auth.decision included.
        # (bind and reset rather than bound_contextvars, which copies the whole context
        # twice: this runs for every message)
        tokens = structlog.contextvars.bind_contextvars(correlation_id=correlation_id)
        try:
            return await self._answer(request, correlation_id)
        finally:
            structlog.contextvars.reset_contextvars(**tokens)

    async def _answer(self, request: Request, correlation_id: str) -> Response:
        peer = _peer(request)
        context = {"endpoint": self.endpoint.config.path, "peer": peer}
        body_read = False
        applied: RequestIdentity | None = None
        try:
            client = _client_address(request)
            applied = await self._check_client(request, client, peer)
            _check_request_line(request)
            async with self.budget.hold(_client_key(request, client),
                                        _declared_size(request, self.endpoint.max_body_bytes)
                                        ) as share:
                body = await read_body(request, self.endpoint.max_body_bytes, share)
                body_read = True
                message = await self._parse(body)
            _check_allowed(message, self.endpoint)
        except SoapFaultError as error:
            log.warning("om.rejected", reason=error.reason, status=error.status,
                        detail=error.message, **context)
            self.metrics.messages.labels("rejected", error.reason).inc()
            response = fault_response(error, correlation_id)
            if not body_read and not await discard_body(request, self.endpoint.max_body_bytes):
                response.headers["Connection"] = "close"  # the rest stays unread
            return response
        except ClientDisconnect:
            log.info("om.rejected", reason="client_disconnected", status=None, **context)
            return Response(status_code=400)
        except Exception:
            log.exception("om.rejected", reason="internal_error", status=500, **context)
            return fault_response(_internal_error(), correlation_id)
        response = await self._store(message, correlation_id, context,
                                     None if applied is None else chain_key(applied.identity))
        if self.chains is not None and applied is not None and response.status_code == 200:
            self.chains.message(applied.identity, self.endpoint.config.path)
        return response

    async def _store(self, message: OutboundMessage, correlation_id: str,
                     context: dict[str, str | None], chain: str | None) -> Response:
        incoming = IncomingMessage(
            message=message,
            endpoint=self.endpoint.config.path,
            received_at=dt.datetime.now(dt.UTC),
            keep_session_id=self.endpoint.store_session_id,
            chain_sha256=chain,
        )
        try:
            result = await self.inbox.store(incoming)
        except Exception as error:  # noqa: BLE001 - any failure to store means no ack
            log.error("om.rejected", reason="store_failed", status=500, detail=str(error),
                      org_id=message.organization_id, **context)
            if isinstance(error, InboxError):
                self.state.readiness.store_failed(error)
            self.metrics.messages.labels("rejected", "store_failed").inc()
            return fault_response(
                SoapFaultError("store_failed",
                               "The message could not be stored; please retry.",
                               status=500, fault_code="Server"),
                correlation_id,
            )
        for warning in message.warnings:
            log.warning("om.warning", code=warning.code, where=warning.where,
                        detail=warning.message, **context)
        self.state.readiness.store_succeeded()
        self._accepted.inc()
        # (a count of nothing skipped: each takes the metric's lock)
        if result.new:
            self._stored["new"].inc(result.new)
            self.state.stored.set()
        if result.duplicates:
            self._stored["duplicate"].inc(result.duplicates)
        if result.conflicts:
            self._stored["conflict"].inc(len(result.conflicts))
        for conflict in result.conflicts:
            log.warning("om.duplicate_conflict", org_id=message.organization_id,
                        notification_id=conflict.notification_id, inbox_id=conflict.inbox_id,
                        stored_sha256=conflict.stored_sha256,
                        redelivered_sha256=conflict.redelivered_sha256, **context)
        log.info(
            "om.accepted",
            org_id=message.organization_id,
            action_id=message.action_id,
            notifications=len(message.notifications),
            new=result.new,
            duplicates=result.duplicates,
            conflicts=len(result.conflicts),
            **context,
        )
        return Acknowledgement(correlation_id)


async def _not_ready_reason(inbox: Inbox, state: ServiceState) -> str | None:
    """Why this process should get no traffic now (None: it should)."""
    if state.draining:
        return "draining"
    return await state.readiness.problem_now(inbox)


def _health_routes(inbox: Inbox, state: ServiceState, *, with_reasons: bool) -> list[Route]:
    """/healthz and /readyz; the reason for a 503 only ``with_reasons`` (the health
    listener): the public listeners answer anyone, without a client certificate."""
    async def healthz(_request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(_request: Request) -> Response:
        reason = await _not_ready_reason(inbox, state)
        if reason is None:
            return PlainTextResponse("ready\n")
        return PlainTextResponse(f"{reason if with_reasons else 'not ready'}\n", status_code=503)

    return [Route("/healthz", healthz, methods=["GET", "HEAD"]),
            Route("/readyz", readyz, methods=["GET", "HEAD"])]


async def _not_found(request: Request, _exc: Exception) -> Response:
    correlation_id = new_correlation_id()
    path = clipped(request.url.path)
    error = SoapFaultError("unknown_endpoint",
                           f"No outbound-message endpoint at {escape_controls(path)}.",
                           status=404)
    log.warning("om.rejected", reason=error.reason, status=404, endpoint=path,
                correlation_id=correlation_id, peer=_peer(request))
    return fault_response(error, correlation_id)


async def _unexpected(request: Request, _exc: Exception) -> Response:
    correlation_id = new_correlation_id()
    log.error("om.rejected", reason="internal_error", status=500,
              endpoint=clipped(request.url.path), correlation_id=correlation_id,
              peer=_peer(request))
    return fault_response(_internal_error(), correlation_id)


def build_endpoints(
    config: Config, schemas: dict[str, NotificationSchema | None],
    policies: dict[str, Policy] | None = None,
) -> list[EndpointRuntime]:
    organization_keys = frozenset(map(id_key, config.salesforce.organization_ids))
    policies = policies or {}
    return [
        EndpointRuntime(
            config=endpoint,
            schema=schemas.get(endpoint.path),
            organization_keys=organization_keys,
            max_body_bytes=config.server.max_body_bytes,
            store_session_id=config.inbox.store_session_id,
            policy=policies.get(endpoint.path),
            allowed_networks=config.server.allowed_client_networks,
        )
        for endpoint in config.endpoints
    ]


class MessageRoutes:
    """A POST to an outbound-message endpoint goes straight to its handler; anything else
    (other methods, health, unknown paths, a path with a trailing slash) through Starlette,
    whose router, middleware and exception wrappers cost a message as much as its parsing.
    A failure outside the handler's own is answered as Starlette answers it."""

    def __init__(self, handlers: dict[str, OutboundMessageHandler], app: Starlette) -> None:
        self.handlers = handlers
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = (self.handlers.get(scope["path"])
                   if scope["type"] == "http" and scope["method"] == "POST" else None)
        if handler is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            response = await handler.handle(request)
        except Exception as error:
            await (await _unexpected(request, error))(scope, receive, send)
            raise
        await response(scope, receive, send)


def create_app(endpoints: list[EndpointRuntime], inbox: Inbox, state: ServiceState,
               gate: ClientAuthGate, metrics: Metrics, budget: BodyBudget,
               chains: ChainRegistry | None = None) -> MessageRoutes:
    handlers = {endpoint.config.path: OutboundMessageHandler(endpoint, inbox, gate, metrics,
                                                             state, budget, chains)
                for endpoint in endpoints}
    routes = [Route(path, handler.handle,
                    methods=["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
              for path, handler in handlers.items()]
    exception_handlers: dict[int | type[Exception], Callable[..., Awaitable[Response]]] = {
        404: _not_found,
        Exception: _unexpected,
    }
    return MessageRoutes(handlers, Starlette(
        routes=[*routes, *_health_routes(inbox, state, with_reasons=False)],
        exception_handlers=exception_handlers))


def create_health_app(inbox: Inbox, state: ServiceState, metrics: Metrics) -> Starlette:
    """/healthz, /readyz and /metrics: for the health listener only, never the public one.
    The backlog figures are read from the inbox at each scrape (a slow or failing inbox
    leaves the last ones), so they hold whether or not this process delivers."""
    async def prometheus(_request: Request) -> Response:
        with contextlib.suppress(InboxError, TimeoutError):
            stats = await asyncio.wait_for(inbox.stats(), INBOX_STATS_SECONDS)
            metrics.inbox_backlog(stats, dt.datetime.now(dt.UTC))
        return Response(metrics.render(), media_type=METRICS_CONTENT_TYPE)

    return Starlette(routes=[*_health_routes(inbox, state, with_reasons=True),
                             Route("/metrics", prometheus, methods=["GET"])])
