"""Prometheus metrics, served on the health listener's /metrics.

One :class:`Metrics` object per process, passed to whoever records; its registry
is its own, so tests and several apps in one process never share counters.
"""

from __future__ import annotations

import datetime as dt
import os

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from service.clientauth import ClientIdentity, Decision
from service.clientauth.model import Outcome

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]
MULTIPROCESS_FOLDER = "PROMETHEUS_MULTIPROC_DIR"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.decisions = Counter(
            "omgate_client_auth_decisions", "Client-certificate decisions.",
            ["outcome", "enforced", "source"], registry=self.registry)
        self.findings = Counter(
            "omgate_client_auth_findings", "Findings in client-certificate decisions.",
            ["code", "severity"], registry=self.registry)
        self.client_cert_days_left = Gauge(
            "omgate_client_cert_days_left",
            "Days until the most recently accepted client certificate expires.",
            registry=self.registry, multiprocess_mode="mostrecent")
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
        self.request_seconds = Histogram(
            "omgate_request_seconds", "Time from request to answer on message endpoints.",
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
                 enforced: bool, now: dt.datetime) -> None:
        """Count a decision; only a proven acceptance moves the accepted certificate's age."""
        self.decisions.labels(outcome, str(enforced).lower(), identity.source).inc()
        for finding in decision.findings:
            self.findings.labels(finding.code, finding.severity).inc()
        if outcome == "accept" and identity.chain:
            leaf = identity.chain[0]
            self.client_cert_days_left.set((leaf.not_valid_after_utc - now).days)

    def render(self) -> bytes:
        if os.environ.get(MULTIPROCESS_FOLDER):  # several workers: sum what they all wrote
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)
