"""``omgate probe URL``: connect the way Salesforce does and report what the server sends.

TLS 1.2 or newer with SNI, the chain judged against public roots (or ``--ca``), what the
server asked for in the client-certificate exchange (and what a Java client would do),
an optional client certificate, and the server's verdict on it (``judge``). ``--post``
sends one test notification, which the server stores like any other, and shows its answer
as it came; without it, a server that asked for a certificate gets one request that is no
outbound message (``VERDICT_BODY``), refused after the certificate check and before
anything is stored. ``--connections N`` opens N connections and reports when they were
served different chains (one bad node behind a load balancer).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO
from urllib.parse import urlsplit

import h11
from cryptography import x509
from OpenSSL import SSL, crypto

from service.clientauth import Finding, chain_fingerprint, summarize
from service.clientauth.serverchain import analyse_server_chain
from service.forwarded import format_address
from service.report import count_line, write_certificates, write_findings
from service.soap import acknowledges
from service.soap.documents import CLIENT_CERT_REFUSED, NOT_NOTIFICATIONS
from service.terminal import escape_controls as shown
from service.terminal import json_text
from service.tools.check import server_trust
from service.tools.messages import describe_answer, outbound_message
from service.tools.tlsclient import (
    Answer,
    ClientChain,
    HttpClient,
    TlsFailure,
    TlsTransport,
    client_context,
    load_client_chain,
)
from service.tools.tlsclient import connect as tls_connect

TIMEOUT_SECONDS = 15
# OpenSSL's name for the client state that has just read a CertificateRequest (TLS 1.2 and
# 1.3 alike): the one sign that the server asked for a certificate, even with no CA names.
CERTIFICATE_REQUEST = b"SSLv3/TLS read server certificate request"


class ProbeError(Exception):
    """The server could not be reached or did not speak TLS; the message says which."""


@dataclass(frozen=True)
class Target:
    host: str  # for SNI, Host and the name check
    port: int
    path: str
    address: str  # where to connect: the host, or one node given with --connect

    @property
    def url(self) -> str:
        return f"https://{format_address((self.host, self.port))}{self.path}"

    @classmethod
    def parse(cls, url: str, connect: str | None = None) -> Target:
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError(f"{url!r} is not an https:// URL (Salesforce only calls HTTPS)")
        address, port = parts.hostname, parts.port or 443
        if connect:
            address, port = _address_and_port(connect, port)
        return cls(parts.hostname, port, parts.path or "/", address)


def _address_and_port(text: str, default_port: int) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port``."""
    if text.startswith("["):
        address, _, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":")
    elif text.count(":") == 1:
        address, _, port_text = text.partition(":")
    else:
        address, port_text = text, ""
    if port_text and not port_text.isdigit():
        raise ValueError(f"--connect {text!r}: the port is not a number")
    return address, int(port_text) if port_text else default_port


@dataclass
class HandshakeNotes:
    """What the info callback saw during one handshake."""

    certificate_requested: bool = False


def _note_certificate_request(connection: SSL.Connection, where: int, _ret: int) -> None:
    if where & SSL.SSL_CB_CONNECT_LOOP and connection.get_state_string() == CERTIFICATE_REQUEST:
        notes = connection.get_app_data()
        if isinstance(notes, HandshakeNotes):
            notes.certificate_requested = True


@dataclass(frozen=True)
class CertificateRequest:
    """The client-certificate exchange as the server led it."""

    requested: bool
    ca_names: tuple[str, ...]  # the CA names listed in the CertificateRequest
    ca_names_der: frozenset[bytes] = field(repr=False)

    def java_would_send(self, chain: ClientChain) -> bool:
        """Java's key managers send a chain only when one of its certificates was issued by
        a listed name (or nothing is listed)."""
        return not self.ca_names_der or any(
            c.issuer.public_bytes() in self.ca_names_der for c in chain.certificates)


@dataclass
class Connection:
    chain: tuple[x509.Certificate, ...]
    tls_version: str
    cipher: str
    request: CertificateRequest
    transport: TlsTransport = field(repr=False)


def _context(chain: ClientChain | None) -> SSL.Context:
    context = client_context(chain, verify_server=False)  # omgate judges the chain, to say why
    context.set_info_callback(_note_certificate_request)
    return context


def open_connection(target: Target, context: SSL.Context, presented: bool) -> Connection:
    notes = HandshakeNotes()
    try:
        transport = tls_connect(target.address, target.port, target.host, context,
                                TIMEOUT_SECONDS, check_name=False, app_data=notes)
    except OSError as error:
        raise ProbeError(f"cannot connect to {format_address((target.address, target.port))}: "
                         f"{error.strerror or error}") from None
    except SSL.Error as error:
        failure = TlsFailure.of(error, server_name=target.host, presented=presented)
        raise ProbeError(f"TLS handshake with {format_address((target.host, target.port))} failed: "
                         f"{failure.words}") from None
    tls = transport.tls
    chain = tuple(tls.get_peer_cert_chain(as_cryptography=True) or ())
    names = tls.get_client_ca_list()
    request = CertificateRequest(notes.certificate_requested,
                                 tuple(ca_name_text(name) for name in names),
                                 frozenset(name.der() for name in names))
    return Connection(chain, tls.get_protocol_version_name(), tls.get_cipher_name() or "",
                      request, transport)


def ca_name_text(name: crypto.X509Name) -> str:
    """A CA name the server asked for, in RFC 4514 order as omgate's logs name CAs. Its
    values are the server's bytes (a BMPString's are UTF-16): what is not UTF-8 is shown
    escaped, never a reason to stop."""
    return ",".join(f"{key.decode(errors='backslashreplace')}="
                    f"{value.decode(errors='backslashreplace')}"
                    for key, value in reversed(name.get_components()))


# What the probe POSTs without --post: a SOAP envelope whose Body holds no notifications.
# omgate judges the client certificate before it reads a body (service/app.py), then refuses
# this one as not an outbound message: 403 for the certificate, 400 past it, and nothing
# stored either way. No receiver can store it as a notification.
VERDICT_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>'
    b'<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">'
    b'<soapenv:Body><probe xmlns="urn:omgate:probe">omgate probe asks for the verdict on its '
    b"client certificate; this is not an outbound message, and nothing is to be stored"
    b"</probe></soapenv:Body></soapenv:Envelope>")
SOAP_HEADERS = [("Content-Type", "text/xml; charset=utf-8"), ("SOAPAction", '""'),
                ("Connection", "close")]

# What came back for the one request of a probe: an answer, a TLS failure (an alert sent
# after a TLS 1.3 handshake), or another transport error in words.
Reply = Answer | TlsFailure | str


def exchange(connection: Connection, target: Target, body: bytes,
             presented: bool) -> Reply:
    try:
        return HttpClient(connection.transport, target.host,
                          timeout=TIMEOUT_SECONDS).post(target.path, body, SOAP_HEADERS)
    except SSL.Error as error:
        return TlsFailure.of(error, server_name=target.host, presented=presented)
    except (OSError, h11.ProtocolError) as error:
        return str(error) or type(error).__name__


def post_test_notification(connection: Connection, target: Target,
                           presented: bool) -> tuple[dict[str, Any], Reply]:
    body, ids = outbound_message()
    reply = exchange(connection, target, body, presented)
    if not isinstance(reply, Answer):
        detail = reply.words if isinstance(reply, TlsFailure) else reply
        return {"result": "transport_error", "detail": detail, "notification_ids": ids}, reply
    result, summary = describe_answer(reply.status, reply.body)
    return {"result": result, "status": reply.status, "summary": summary,
            "body": reply.body.decode("utf-8", errors="replace"),
            "notification_ids": ids}, reply


VerdictOutcome = Literal["passed", "refused", "unknown"]


@dataclass(frozen=True)
class CertificateVerdict:
    """What the server did with the client certificate presented (or with none), and what
    that does and does not prove."""

    outcome: VerdictOutcome
    how: str
    proven: tuple[str, ...]
    not_proven: tuple[str, ...]
    presented: bool

    @property
    def problem(self) -> str | None:
        """A refusal of a certificate the probe presented fails the probe."""
        if self.outcome == "refused" and self.presented:
            return "the server refused the client certificate presented"
        return None

    def to_json(self) -> dict[str, Any]:
        return {"outcome": self.outcome, "how": self.how, "proven": list(self.proven),
                "not_proven": list(self.not_proven)}


def _fault_text(answer: Answer) -> str:
    return describe_answer(answer.status, answer.body)[1]


def judge(reply: Reply, chain: ClientChain | None, path: str, posted: bool
          ) -> CertificateVerdict:
    """The server's verdict on the client certificate, from its answer to the probe's one
    request (the test notification with --post, else VERDICT_BODY)."""
    presented = chain is not None
    what = (f"the client certificate presented ({chain.certificates[0].subject.rfc4514_string()})"
            if chain else "a client without a certificate")
    unknown = ("whether the server accepts " + what,)
    enforcing = ("that the server enforces its policy: in mode request every certificate gets "
                 "through and is only logged (omgate's client_auth.decision line says what it "
                 "decided: outcome, would_reject)")
    others = "that another certificate, Salesforce's own, gets through: only this one was tried"
    stored = "that a message is stored and acknowledged (--post sends one, which is stored)"

    def verdict(outcome: VerdictOutcome, how: str, proven: tuple[str, ...] = (),
                not_proven: tuple[str, ...] = unknown) -> CertificateVerdict:
        return CertificateVerdict(outcome, how, proven, not_proven, presented)

    if isinstance(reply, TlsFailure):
        if reply.kind == "client_refused":
            return verdict("refused", f"in the TLS handshake: alert {reply.alert}",
                           (f"the server refuses {what}",),
                           ("why: the server's log says (omgate's client_auth.decision line "
                            "names every finding and its fix)",))
        return verdict("unknown", reply.words)
    if isinstance(reply, str):
        return verdict("unknown", f"no answer: {reply}")
    if reply.status == 0:  # the connection closed before an answer's status line
        return verdict("unknown", "the server closed the connection without an answer")
    text = _fault_text(reply)
    if CLIENT_CERT_REFUSED in text:
        return verdict("refused", f"HTTP {reply.status} after the handshake ({text})",
                       (f"the server refuses {what} for {path}",),
                       ("why: the server's log says (omgate's client_auth.decision line "
                        "names every finding and its fix)",))
    passed = (f"the server asked for a client certificate, and {what} got through its "
              f"certificate check for {path}",)
    if reply.status == 200 and acknowledges(reply.body):
        if posted:
            return verdict("passed", "the test notification was acknowledged",
                           (*passed, "a message is stored and acknowledged"),
                           (enforcing, others))
        return verdict("unknown", "the server acknowledged a request that is no outbound "
                                  "message: it is not omgate's endpoint, and what it did with "
                                  "it is unknown")
    if NOT_NOTIFICATIONS in text:
        return verdict("passed", f"HTTP {reply.status} to a request that is no outbound "
                                 "message, refused after the certificate check (nothing was "
                                 "stored)", passed,
                       (enforcing, others, *(() if posted else (stored,))))
    if reply.status == 404:
        return verdict("unknown", f"there is no endpoint at {path} ({text}): a certificate is "
                                  "judged per endpoint, so probe an endpoint's URL")
    if reply.status == 403 or reply.status >= 500:
        return verdict("unknown", f"refused for another reason than the certificate, before "
                                  f"it was judged or whatever it was ({text})")
    return verdict("passed", f"HTTP {reply.status} for another reason than the certificate "
                             f"({text}); omgate judges the certificate first",
                   passed, (enforcing, others, *(() if posted else (stored,))))


def exchange_findings(request: CertificateRequest, chain: ClientChain | None) -> list[Finding]:
    """A client chain that a Java client, Salesforce, would not send to this server."""
    if chain is None or not request.requested or request.java_would_send(chain):
        return []
    return [Finding(
        "no_client_cert", "warning", None,
        "The server lists CA names in its CertificateRequest, and no certificate of the "
        "chain given with --client-cert was issued under one of them: a Java client "
        "(Salesforce) would send no certificate to this server.",
        "List the CA that issues the client certificate, or none (omgate: "
        'client_auth.advertise_ca_names = "anchors" or "none").')]


def describe_request(request: CertificateRequest, chain: ClientChain | None) -> str:
    """The client-certificate exchange in words, with what a Java client would do."""
    if not request.requested:
        return ("The server did not ask for a client certificate: Salesforce sends none "
                "(client_auth.mode off, or a balancer in front that does not ask)."
                + (" The --client-cert given was not sent." if chain else ""))
    presented = (f" This probe presented {chain.certificates[0].subject.rfc4514_string()}."
                 if chain else " This probe presented none (--client-cert).")
    if not request.ca_names:
        return ("The server asked for a client certificate and listed no CA names: a Java "
                "client (Salesforce) sends the certificate it is configured with, whatever "
                "its issuer." + presented)
    return ("The server asked for a client certificate and listed these CA names: "
            + "; ".join(request.ca_names) + ". A Java client (Salesforce) sends its "
            "certificate only when one in its chain was issued under a listed name, and "
            "none otherwise." + presented)


@dataclass
class ProbeReport:
    target: Target
    client_chain: ClientChain | None = None
    request: CertificateRequest | None = None  # as the first connection saw it
    connections: list[dict[str, Any]] = field(default_factory=list)
    chains: dict[str, list[Finding]] = field(default_factory=dict)
    summaries: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    post: dict[str, Any] | None = None
    verdict: CertificateVerdict | None = None  # None: the server asked for no certificate

    @property
    def findings(self) -> list[Finding]:
        exchange = exchange_findings(self.request, self.client_chain) if self.request else []
        return [*(f for findings in self.chains.values() for f in findings), *exchange]

    @property
    def problems(self) -> list[str]:
        """What failed besides the findings: they count as errors in the summary."""
        problems = []
        if len(self.chains) > 1:
            problems.append("the connections were served different chains")
        if self.post is not None and self.post["result"] != "ack":
            problems.append("the test notification was not acknowledged")
        if self.verdict is not None and self.verdict.problem:
            problems.append(self.verdict.problem)
        return problems

    @property
    def failed(self) -> bool:
        return any(f.severity == "error" for f in self.findings) or bool(self.problems)

    def to_json(self) -> dict[str, Any]:
        request = self.request
        return {
            "url": self.target.url,
            "certificate_request": None if request is None else {
                "requested": request.requested, "ca_names": list(request.ca_names),
                "explanation": describe_request(request, self.client_chain)},
            "connections": self.connections,
            "chains": {key: {"certificates": self.summaries[key],
                             "findings": [f.to_json() for f in findings]}
                       for key, findings in self.chains.items()},
            "different_chains": len(self.chains) > 1,
            "findings": [f.to_json() for f in exchange_findings(request, self.client_chain)]
            if request else [],
            "client_certificate_verdict": self.verdict.to_json() if self.verdict else None,
            "post": self.post,
            "problems": self.problems,
            "ok": not self.failed,
        }


def probe(url: str, *, ca: Path | None = None, client_cert: Path | None = None,
          client_key: Path | None = None, connections: int = 1, post: bool = False,
          connect: str | None = None, now: dt.datetime | None = None) -> ProbeReport:
    target = Target.parse(url, connect)
    now = now or dt.datetime.now(dt.UTC)
    trust = server_trust(ca, "--ca")
    chain = load_client_chain(client_cert, client_key) if client_cert else None
    context = _context(chain)
    report = ProbeReport(target, chain)
    presented = chain is not None
    for number in range(1, connections + 1):
        connection = open_connection(target, context, presented)
        try:
            report.request = report.request or connection.request
            key = chain_fingerprint(connection.chain)
            report.connections.append({
                "connection": number, "chain_sha256": key, "tls_version": connection.tls_version,
                "cipher": connection.cipher,
                "certificate_requested": connection.request.requested,
                "requested_ca_names": list(connection.request.ca_names)})
            if key not in report.chains:
                report.summaries[key] = [summarize(c, now) for c in connection.chain]
                report.chains[key] = analyse_server_chain(
                    connection.chain, trust=trust, public_names=(target.host,), now=now)
            if number == connections:
                reply: Reply | None = None
                if post:
                    report.post, reply = post_test_notification(connection, target, presented)
                elif connection.request.requested:
                    reply = exchange(connection, target, VERDICT_BODY, presented)
                if reply is not None and connection.request.requested:
                    report.verdict = judge(reply, chain, target.path, post)
        finally:
            connection.transport.close()
    return report


def _write_post(post: dict[str, Any], out: TextIO) -> None:
    out.write(f"\ntest notification {', '.join(post['notification_ids'])}: ")
    if post["result"] == "transport_error":
        out.write(f"transport error: {shown(post['detail'])}\n")
    else:
        body = shown(post["body"].strip(), keep="\n")
        out.write(f"{shown(post['summary'])}\n{body}\n")


VERDICT_WORDS = {"passed": "passed the server's certificate check",
                 "refused": "REFUSED by the server", "unknown": "NOT PROVEN"}


def _write_verdict(verdict: CertificateVerdict, out: TextIO) -> None:
    out.write(f"\nclient certificate verdict: {VERDICT_WORDS[verdict.outcome]}, "
              f"{shown(verdict.how)}\n")
    for label, items in (("proven", verdict.proven), ("not proven", verdict.not_proven)):
        for item in items:
            out.write(f"  {label + ':':<12}{shown(item)}\n")


def write_text(report: ProbeReport, out: TextIO) -> None:
    target = report.target
    out.write(f"omgate probe: {target.url}\n")
    first = report.connections[0]
    out.write(f"{first['tls_version']}, {first['cipher']}\n")
    if report.request is not None:
        exchange = describe_request(report.request, report.client_chain)
        out.write(f"\nclient certificate: {shown(exchange)}\n")
    if len(report.chains) > 1:
        out.write(f"\nDIFFERENT CHAINS: {len(report.connections)} connections were served "
                  f"{len(report.chains)} different chains (one node is set up differently):\n")
        for connection in report.connections:
            out.write(f"  connection {connection['connection']}: chain "
                      f"{connection['chain_sha256'][:16]}\n")
    for key, findings in report.chains.items():
        label = f" {key[:16]}" if len(report.chains) > 1 else ""
        out.write(f"\nchain{label}, as the server sent it:\n")
        write_certificates(report.summaries[key], out, indent="  ")
        out.write("\n")
        write_findings(findings, out)
    if report.request is not None:
        write_findings(exchange_findings(report.request, report.client_chain), out)
    if report.verdict is not None:
        _write_verdict(report.verdict, out)
    if report.post is not None:
        _write_post(report.post, out)
    else:
        out.write("\nNo test notification was posted (--post sends one; the server stores it "
                  "like any other)."
                  + (" The request that asked for the verdict was no outbound message: nothing "
                     "was stored.\n" if report.verdict else "\n"))
    for problem in report.problems:
        out.write(f"ERROR {shown(problem)}\n")
    summary = count_line(report.findings, extra_errors=len(report.problems))
    out.write(f"\n{'FAILED' if report.failed else 'OK'}: {summary}\n")


def run_probe(url: str, out: TextIO, *, as_json: bool, **options: Any) -> int:
    try:
        report = probe(url, **options)
    except ProbeError as error:
        if as_json:
            out.write(json_text({"url": url, "error": str(error), "ok": False}, indent=2) + "\n")
        else:
            out.write(f"omgate probe: {error}\n")
        return 1
    if as_json:
        out.write(json_text(report.to_json(), indent=2) + "\n")
    else:
        write_text(report, out)
    return 1 if report.failed else 0
