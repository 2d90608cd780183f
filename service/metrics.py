"""Prometheus metrics, served on the health listener's /metrics.

One :class:`Metrics` object per process, passed to whoever records; its registry
is its own, so tests and several apps in one process never share counters.

With several workers (prometheus_client's multiprocess mode) every worker writes its
metrics to a shared folder and /metrics, whichever worker answers, sums them. The
standard process collector cannot go through that folder, so there each omgate process
(the supervisor and every worker) is collected from /proc with a ``pid`` label.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Generic, TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
    multiprocess,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from service.build import build_info
from service.clientauth import ClientIdentity, Decision
from service.clientauth.model import Outcome
from service.inbox import InboxStats
from service.multiprocess import METRICS_FOLDER_VARIABLE

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]


def _worker_pids(supervisor: int) -> list[int]:
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children")
    try:
        return [int(pid) for pid in children.read_text().split()]
    except (OSError, ValueError):
        return [os.getpid()]  # at least the process answering


def _fixed_pid(pid: int) -> Callable[[], int]:
    """ProcessCollector asks for its pid through a call: this one always answers ``pid``."""
    return lambda: pid


class ProcessTreeCollector(Collector):
    """The standard process metrics of the supervisor and each of its workers, by ``pid``."""

    def collect(self) -> Iterable[Metric]:
        supervisor = os.getppid()
        merged: dict[str, Metric] = {}
        for pid in [supervisor, *_worker_pids(supervisor)]:
            for family in ProcessCollector(pid=_fixed_pid(pid), registry=None).collect():
                target = merged.setdefault(family.name, Metric(
                    family.name, family.documentation, family.type))
                target.samples += [sample._replace(labels={**sample.labels, "pid": str(pid)})
                                   for sample in family.samples]
        return merged.values()

    def describe(self) -> Iterator[Metric]:
        return iter(())


_Labelled = TypeVar("_Labelled", Counter, Gauge)


class _Children(Generic[_Labelled]):
    """``metric.labels(*values)`` for values seen before, without prometheus_client's checks
    and lock: a decision is counted for every request a proxy forwards. Children are never
    removed, so prometheus_client's own map of them stays the truth."""

    def __init__(self, metric: _Labelled) -> None:
        self._metric: _Labelled = metric
        self._children: dict[tuple[str, ...], _Labelled] = {}

    def __call__(self, *values: str) -> _Labelled:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.decisions = Counter(
            "omgate_client_auth_decisions", "Client-certificate decisions.",
            ["outcome", "enforced", "source"], registry=self.registry)
        self.findings = Counter(
            "omgate_client_auth_findings", "Findings in client-certificate decisions.",
            ["code", "severity"], registry=self.registry)
        # labelled, so that it is absent (not 0, which an expiry alert would take for an
        # expired certificate) until a certificate has been accepted
        self.client_cert_expiry = Gauge(
            "omgate_client_cert_expiry_timestamp_seconds",
            "When the most recently accepted client certificate expires (Unix time), by "
            "where it arrived: tls (omgate's handshake) or forwarded (a proxy's header).",
            ["source"], registry=self.registry, multiprocess_mode="mostrecent")
        self._decisions, self._findings = _Children(self.decisions), _Children(self.findings)
        self._client_cert_expiry = _Children(self.client_cert_expiry)
        self.server_cert_expiry = Gauge(
            "omgate_server_cert_expiry_timestamp_seconds",
            "When the server certificate in service (server.certfile's first) expires "
            "(Unix time).", ["certfile"], registry=self.registry,
            multiprocess_mode="mostrecent")
        self.build_info = Gauge(
            "omgate_build_info", "The omgate version and the Python and OpenSSL it runs on.",
            ["version", "python", "openssl"], registry=self.registry, multiprocess_mode="max")
        info = build_info()
        self.build_info.labels(info.version, info.python, info.openssl).set(1)
        if not os.environ.get(METRICS_FOLDER_VARIABLE):
            ProcessCollector(registry=self.registry)
        self.handshake_failures = Counter(
            "omgate_tls_handshake_failures", "TLS handshakes that did not complete.",
            ["reason"], registry=self.registry)
        self.connections_refused = Counter(
            "omgate_connections_refused",
            "Connections refused at once, by the limit that refused them (max_connections, "
            "max_connections_per_peer).", ["reason"], registry=self.registry)
        self.messages = Counter(
            "omgate_messages", "Outbound messages by result (accepted, rejected).",
            ["result", "reason"], registry=self.registry)
        self.notifications = Counter(
            "omgate_notifications",
            "Notifications acknowledged: new, duplicate (a redelivery of what is stored) or "
            "conflict (a redelivery whose content differs).",
            ["kind"], registry=self.registry)
        self.request_duration = Histogram(
            "omgate_request_duration_seconds",
            "Time from request to answer on message endpoints.",
            ["endpoint"], registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))

        self.delivery_attempts = Counter(
            "omgate_delivery_attempts", "Delivery attempts by result (delivered, failed, dead).",
            ["result"], registry=self.registry)
        self.delivery_backlog = Gauge(
            "omgate_delivery_backlog", "Notifications stored and not yet delivered.",
            registry=self.registry, multiprocess_mode="mostrecent")
        self.oldest_pending_seconds = Gauge(
            "omgate_delivery_oldest_pending_seconds",
            "Age of the oldest notification waiting for delivery.", registry=self.registry,
            multiprocess_mode="mostrecent")
        self.dead_letters = Gauge(
            "omgate_delivery_dead_letters", "Notifications given up on (dead letters).",
            registry=self.registry, multiprocess_mode="mostrecent")

    def decision(self, identity: ClientIdentity, decision: Decision, outcome: Outcome,
                 enforced: bool) -> None:
        """Count a decision; only a proven acceptance moves the accepted certificate's
        expiry (never an unproven chain or a refused one)."""
        self._decisions(outcome, "true" if enforced else "false", identity.source).inc()
        for finding in decision.findings:
            self._findings(finding.code, finding.severity).inc()
        if outcome == "accept" and identity.chain:
            leaf = identity.chain[0]
            self._client_cert_expiry(identity.source).set(
                leaf.not_valid_after_utc.timestamp())

    def server_certificate(self, certfile: Path, not_after: dt.datetime) -> None:
        """The server certificate now in service (at start and after each reload)."""
        self.server_cert_expiry.labels(str(certfile)).set(not_after.timestamp())

    def inbox_backlog(self, stats: InboxStats, now: dt.datetime) -> None:
        """What the inbox holds undelivered, whether or not omgate delivers it itself."""
        self.delivery_backlog.set(stats.pending)
        self.dead_letters.set(stats.dead)
        oldest = stats.oldest_pending_received_at
        age = (now - oldest).total_seconds() if oldest else 0.0
        self.oldest_pending_seconds.set(max(age, 0.0))

    def render(self) -> bytes:
        if os.environ.get(METRICS_FOLDER_VARIABLE):  # several workers: sum what they all wrote
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            registry.register(ProcessTreeCollector())
            return generate_latest(registry)
        return generate_latest(self.registry)
