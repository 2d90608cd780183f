"""``omgate check``: the whole configuration and everything it points to, before a deploy.

The server chain is judged as Salesforce will see it (order, intermediates, expiry,
key, host names, a public root); the client-certificate settings are checked for
files that load, pins that chain to the anchors, DNs that something could match, and
settings that cannot work together.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import certifi
from cryptography.utils import CryptographyDeprecationWarning

from service.certfiles import (
    CertificateFileError,
    ServerFileError,
    load_certificates,
    load_server_identity,
)
from service.clientauth import ClientIdentity, Finding, Policy, summarize
from service.clientauth.model import FindingCode, Severity
from service.clientauth.serverchain import ServerTrust, analyse_server_chain
from service.config import Config, ConfigError, PolicyRules
from service.exitcodes import UsageError
from service.inbox import sqlite_path
from service.inbox.sqlite_database import database_files
from service.logs import get_logger
from service.policy_loader import PolicyLoader
from service.report import count_line, write_certificates, write_findings
from service.secretfiles import readable_by_others
from service.terminal import json_text
from service.tls.opinion import evaluate_offline

CONFIG_CONFLICT: FindingCode = "config_conflict"
log = get_logger("omgate")


@dataclass
class CheckReport:
    config: Path
    server_chain: list[dict[str, Any]] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(finding.severity == "error" for finding in self.findings)

    def to_json(self) -> dict[str, Any]:
        return {"config": str(self.config), "server_chain": self.server_chain,
                "findings": [finding.to_json() for finding in self.findings],
                "ok": not self.failed}


def server_trust(roots: Path | None, option: str) -> ServerTrust:
    """The roots given with ``option`` (``--trust``, ``--ca``), or certifi's copy of
    Mozilla's public roots."""
    path = roots or Path(certifi.where())
    try:
        with warnings.catch_warnings():  # a few old public roots have non-positive serials
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            anchors = tuple(load_certificates(path, option if roots else "certifi"))
    except CertificateFileError as error:
        raise UsageError(str(error)) from None
    if roots is None:
        return ServerTrust(anchors, "the public trust store", public=True)
    return ServerTrust(anchors, f"{option} {roots}", public=False)


def check_server(config: Config, report: CheckReport, trust: ServerTrust,
                 now: dt.datetime) -> None:
    """The server's files read as ``omgate serve`` reads them (one loader), then the chain
    judged as Salesforce will see it."""
    certfile, keyfile = config.server_identity()
    try:
        identity = load_server_identity(certfile, keyfile)
    except ServerFileError as error:
        raise config.error("server", error.key, error.problem) from None
    chain = identity.chain
    report.server_chain = [summarize(certificate, now) for certificate in chain]
    report.findings += analyse_server_chain(
        chain, trust=trust, public_names=config.server.public_names, now=now,
        key=identity.key.public_key(),
        expiry_warning_days=config.client_auth.rules.expiry_warning_days)


def _conflict(severity: Severity, message: str, hint: str) -> Finding:
    return Finding(CONFIG_CONFLICT, severity, None, message, hint)


def listener_conflicts(config: Config, policy: Policy) -> list[Finding]:
    settings, server = config.client_auth, config.server
    findings = []
    if settings.mode == "off" and (settings.advertise_ca_names != "none"
                                   or settings.reject_with == "handshake"):
        findings.append(_conflict(
            "warning", "[client_auth] mode is off, so advertise_ca_names and reject_with have "
                       "no effect.", "Remove them, or choose another mode."))
    if policy.enforced and not policy.anchors and not policy.known_cas and not policy.pins:
        findings.append(_conflict(
            "error", f"[client_auth] mode is {settings.mode} with no trust anchors and no pins: "
                     "every client certificate will be refused.",
            "Set client_auth.trust (or pins) to what the sender's certificate chains to."))
    if settings.forwarded_cert is not None and not server.trusted_proxies:
        findings.append(_conflict(
            "error", "[client_auth] forwarded_cert is set but server.trusted_proxies is empty: "
                     "no forwarded certificate will ever be believed.",
            "List the load balancer's networks in server.trusted_proxies."))
    if server.proxy_protocol and not server.trusted_proxies:
        findings.append(_conflict(
            "error", "[server] proxy_protocol is on but trusted_proxies is empty: no PROXY "
                     "header will ever be read.",
            "List the load balancer's networks in server.trusted_proxies."))
    if settings.forwarded_cert is not None and server.bind and not server.plain_bind:
        findings.append(_conflict(
            "warning", "[client_auth] forwarded_cert is set, but omgate terminates TLS itself "
                       "(no plain_bind): a balancer in front would forward TCP, not headers.",
            "Use forwarded_cert with plain_bind behind a TLS-terminating balancer."))
    return findings


def refuse_conflicts(config: Config, err: TextIO) -> bool:
    """At ``omgate serve`` start: the config_conflict rules of ``omgate check``. Warnings are
    logged; errors are written to ``err`` in check's words, and True means do not start."""
    findings = listener_conflicts(config, PolicyLoader(config).listener_policy())
    errors = [finding for finding in findings if finding.severity == "error"]
    for finding in findings:
        if finding.severity != "error":
            log.warning("config.conflict", config=str(config.source), **finding.to_json())
    if errors:
        err.write(f"omgate serve: {config.source}: settings that cannot work together "
                  "(omgate check reports them too):\n")
        write_findings(errors, err)
    return bool(errors)


def secret_files(config: Config) -> list[tuple[str, Path]]:
    """(configuration key, file) for each file the configuration names that holds a
    secret: private keys, the console's token, the SQLite inbox (with its -wal and -shm)."""
    delivery = config.delivery
    files = [("server.keyfile", config.server.keyfile),
             ("delivery.webhook_client_key", delivery.webhook_client_key),
             ("admin.token_file", config.admin.token_file)]
    if delivery.webhook_client_key is None:  # the key is in the certificate's file
        files.append(("delivery.webhook_client_cert", delivery.webhook_client_cert))
    database = sqlite_path(config.inbox.url)
    if database is not None:
        files += [("inbox.url", path) for path in database_files(database)]
    return [(key, path) for key, path in files if path is not None]


def warn_readable_secrets(config: Config) -> None:
    """At ``omgate serve`` start: each secret file its group or others may read is logged
    (``config.file_permissions``). Its mode is left as it is: whether a group should read
    a key is the operator's call, and a silent chmod could lock out whoever relies on it."""
    for key, path in secret_files(config):
        mode = readable_by_others(path)
        if mode is not None:
            log.warning("config.file_permissions", config=str(config.source), key=key,
                        path=str(path), mode=f"{mode:04o}",
                        hint=f"readable by other users; chmod go-rwx {path} unless they must "
                             "read it")


def advertised_conflicts(config: Config, loader: PolicyLoader, policy: Policy) -> list[Finding]:
    advertised = {certificate.subject for certificate in loader.advertised()}
    known = {c.subject for c in (*policy.anchors, *policy.known_cas)}
    if not advertised or advertised & known:
        return []
    return [Finding(
        "no_client_cert", "warning", None,
        "[client_auth] advertise_ca_names lists no CA of client_auth.trust: a Java client "
        "(Salesforce) whose chain leads to a trusted anchor would send no certificate.",
        'Set advertise_ca_names = "anchors" or "none".',
    )]


def _pinned(rules: PolicyRules, loader: PolicyLoader) -> list[tuple[Path, tuple[Any, ...]]]:
    return [(path, loader.certificates(path, "pin_files"))
            for path in rules.pin_files]


def _issuer_could_be_sent(rules: PolicyRules, policy: Policy) -> bool:
    """Whether the client certificate's issuer may be a certificate the client sends, which
    check cannot see: an intermediate below an anchor, or anything when hash pins decide."""
    if policy.trust_required:
        return policy.verify_depth > 1
    return bool(rules.pins)


def _issuer_dn_problems(label: str, rules: PolicyRules, policy: Policy,
                        pinned: list[tuple[Path, tuple[Any, ...]]]) -> list[Finding]:
    dn = rules.issuer_dn
    configured = [*policy.anchors, *policy.known_cas, *(c for _, chain in pinned for c in chain)]
    if dn is None or any(dn.matches(c.subject) or dn.matches(c.issuer) for c in configured):
        return []
    if _issuer_could_be_sent(rules, policy):
        return [Finding(
            "issuer_dn_mismatch", "info", None,
            f"{label} issuer_dn {dn.text!r} is the subject of no certificate in trust or "
            "pin_files. It can still match: the client certificate's issuer may be an "
            "intermediate the client sends, which check cannot see.",
            "Compare it with the issuer of the sender's certificate: `omgate inspect` of its "
            "chain shows it.")]
    why = (f"verify_depth = {rules.verify_depth} leaves no room for an intermediate"
           if policy.trust_required else "only the pinned certificates are accepted")
    return [Finding(
        "issuer_dn_mismatch", "warning", None,
        f"{label} issuer_dn {dn.text!r} is the subject of no certificate in trust or "
        f"pin_files, and {why}: nothing will match.",
        "Compare it with `omgate inspect` of the sender's chain, or add that CA to trust.")]


def rule_problems(label: str, rules: PolicyRules, policy: Policy, loader: PolicyLoader,
                  now: dt.datetime) -> list[Finding]:
    """Pinned certificates that would not pass, DNs that nothing configured could match."""
    findings = []
    pinned = _pinned(rules, loader)
    for path, chain in pinned:
        if not policy.anchors and not policy.known_cas:
            continue  # pins alone decide: nothing to chain to
        decision = evaluate_offline(ClientIdentity(chain, "forwarded"), policy, now)
        for finding in decision.findings:
            if finding.severity == "error":
                findings.append(Finding(
                    finding.code, finding.severity, None,
                    f"{label} pin_files {path}: {finding.message}", finding.hint))
    findings += _issuer_dn_problems(label, rules, policy, pinned)
    pinned_leaves = [chain[0] for _, chain in pinned if chain]
    if rules.subject_dn is not None and pinned_leaves and not any(
            rules.subject_dn.matches(c.subject) for c in pinned_leaves):
        findings.append(Finding(
            "subject_dn_mismatch", "warning", None,
            f"{label} subject_dn {rules.subject_dn.text!r} matches none of the pinned "
            "certificates: they would all be refused.",
            "Make subject_dn the pinned certificate's subject, or drop one of the two rules."))
    return findings


def check_client_auth(config: Config, report: CheckReport, now: dt.datetime) -> None:
    loader = PolicyLoader(config)
    policy = loader.listener_policy()
    report.findings += listener_conflicts(config, policy)
    if config.client_auth.mode == "off":
        return
    report.findings += advertised_conflicts(config, loader, policy)
    report.findings += rule_problems("[client_auth]", config.client_auth.rules, policy, loader,
                                     now)
    for endpoint in config.endpoints:
        if endpoint.client_auth is not None:
            report.findings += rule_problems(
                f"[[endpoints]] {endpoint.path}:", endpoint.client_auth,
                loader.policy(endpoint.client_auth), loader, now)


def check_deployment(config: Config, *, trust: Path | None = None,
                     now: dt.datetime | None = None) -> CheckReport:
    now = now or dt.datetime.now(dt.UTC)
    report = CheckReport(config.source)
    if config.server.bind:
        check_server(config, report, server_trust(trust, "--trust"), now)
    check_client_auth(config, report, now)
    check_delivery(config, report)
    return report


def check_delivery(config: Config, report: CheckReport) -> None:
    """The delivery target as serve and deliver build it: its handler imported, or its
    webhook's CA and client certificate read (nothing is sent)."""
    if not config.delivery.enabled:
        return
    # here, not at the top: serve runs check before its supervisor sets up the workers'
    # shared metrics, and these bring prometheus_client, which picks its mode when it is
    # imported
    from service.delivery.targets import ClosingTarget
    from service.server import delivery_target_of

    try:
        target = delivery_target_of(config)
    except ConfigError as error:
        report.findings.append(_conflict(
            "error", f"[delivery] cannot be used: {error}",
            "Fix it as the message says: `omgate serve` and `omgate deliver` refuse to "
            "start with it."))
        return
    if isinstance(target, ClosingTarget):
        asyncio.run(target.aclose())


def write_text(report: CheckReport, config: Config, out: TextIO) -> None:
    out.write(f"omgate check: {report.config}\n\n")
    if report.server_chain:
        out.write(f"server certificate chain ({config.server.certfile}), as sent:\n")
        write_certificates(report.server_chain, out, indent="  ")
    else:
        out.write("no TLS listener (server.bind is empty): check the balancer's certificate "
                  "with `omgate probe`.\n")
    out.write(f"\nclient certificates: mode {config.client_auth.mode}, reject_with "
              f"{config.client_auth.reject_with}\n\n")
    write_findings(report.findings, out)
    out.write(f"\n{'FAILED' if report.failed else 'OK'}: {count_line(report.findings)}\n")


def check_serve_starts(config: Config, report: CheckReport) -> None:
    """What ``omgate serve`` refuses before it listens and the rest of check does not read
    (the event loop, the inbox's folder, the listeners and the body budget, the console's
    token, the WSDLs): each as an error finding, so check never passes a configuration
    serve refuses. Nothing is created. Not part of :func:`check_deployment`, which serve
    runs itself before its supervisor's metrics (these imports bring prometheus_client)."""
    from service.server import check_listening, inbox_folder_to_create, load_schemas
    from service.supervisor import event_loop_factory

    steps = (event_loop_factory, lambda checked: inbox_folder_to_create(checked, create=False),
             check_listening, load_schemas)
    for step in steps:
        try:
            step(config)
        except ConfigError as error:
            report.findings.append(_conflict(
                "error", f"omgate serve would refuse to start: {error}",
                "Fix it as the message says."))


def run_check(config: Config, out: TextIO, *, trust: Path | None, as_json: bool,
              now: dt.datetime | None = None) -> int:
    report = check_deployment(config, trust=trust, now=now)
    check_serve_starts(config, report)
    if as_json:
        out.write(json_text(report.to_json(), indent=2) + "\n")
    else:
        write_text(report, config, out)
    return 1 if report.failed else 0
