"""``omgate probe URL``: connect the way Salesforce does and report what the server sends.

TLS 1.2 or newer with SNI, the chain judged against public roots (or ``--ca``), an
optional client certificate, then one test notification whose answer is shown as it
came. ``--connections N`` opens N connections and reports when they were served
different chains (one bad node behind a load balancer).
"""

from __future__ import annotations

import datetime as dt
import select
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO, TypeVar
from urllib.parse import urlsplit

from cryptography import x509
from OpenSSL import SSL

from service.clientauth import Finding, chain_fingerprint, summarize
from service.clientauth.serverchain import analyse_server_chain
from service.terminal import escape_controls as shown
from service.terminal import json_text
from service.tools.check import public_roots
from service.tools.messages import describe_answer, outbound_message
from service.tools.report import count_line, write_certificates, write_findings

TIMEOUT_SECONDS = 15
MAX_RESPONSE_BYTES = 1024 * 1024


class ProbeError(Exception):
    """The server could not be reached or did not speak TLS; the message says which."""


@dataclass(frozen=True)
class Target:
    host: str  # for SNI, Host and the name check
    port: int
    path: str
    address: str  # where to connect: the host, or one node given with --connect

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
class Connection:
    chain: tuple[x509.Certificate, ...]
    tls_version: str
    cipher: str
    requested_ca_names: list[str]
    tls: SSL.Connection = field(repr=False)
    sock: socket.socket = field(repr=False)


def _context(client_cert: Path | None, client_key: Path | None) -> SSL.Context:
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    context.set_min_proto_version(SSL.TLS1_2_VERSION)
    context.set_verify(SSL.VERIFY_NONE)  # omgate judges the chain itself, to say why
    context.set_alpn_protos([b"http/1.1"])
    if client_cert is not None:
        context.use_certificate_chain_file(str(client_cert))
        context.use_privatekey_file(str(client_key or client_cert))
    return context


T = TypeVar("T")


def patiently(call: Callable[[], T], sock: socket.socket) -> T:
    """Run a pyOpenSSL call on a socket with a timeout, waiting while it wants I/O."""
    deadline = time.monotonic() + TIMEOUT_SECONDS
    while True:
        try:
            return call()
        except (SSL.WantReadError, SSL.WantWriteError) as want:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no answer within {TIMEOUT_SECONDS} s") from None
            readable = isinstance(want, SSL.WantReadError)
            select.select([sock] if readable else [], [] if readable else [sock], [],
                          remaining)


def open_connection(target: Target, context: SSL.Context) -> Connection:
    try:
        sock = socket.create_connection((target.address, target.port),
                                        timeout=TIMEOUT_SECONDS)
    except OSError as error:
        raise ProbeError(f"cannot connect to {target.address}:{target.port}: "
                         f"{error.strerror or error}") from None
    tls = SSL.Connection(context, sock)
    tls.set_tlsext_host_name(target.host.encode("idna"))
    tls.set_connect_state()
    try:
        patiently(tls.do_handshake, sock)
    except (SSL.Error, OSError) as error:
        sock.close()
        detail = str(error) or type(error).__name__
        if "wrong version number" in detail or "packet length too long" in detail:
            detail = "the port does not speak TLS (plain HTTP?)"
        raise ProbeError(f"TLS handshake with {target.host}:{target.port} failed: "
                         f"{detail}") from None
    chain = tuple(tls.get_peer_cert_chain(as_cryptography=True) or ())
    names = [name.get_components() for name in tls.get_client_ca_list()]
    return Connection(chain, tls.get_protocol_version_name(), tls.get_cipher_name() or "",
                      [", ".join(f"{k.decode()}={v.decode()}" for k, v in parts)
                       for parts in names], tls, sock)


def _read_response(tls: SSL.Connection, sock: socket.socket) -> tuple[int, bytes]:
    data = b""
    while len(data) < MAX_RESPONSE_BYTES:
        try:
            chunk = patiently(lambda: tls.recv(65536), sock)
        except (SSL.ZeroReturnError, SSL.SysCallError):
            break
        if not chunk:
            break
        data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), None)
        if length is not None and len(body) >= length:
            break
    head, _, body = data.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n")[0].split()
    status = int(status_line[1]) if len(status_line) > 1 and status_line[1].isdigit() else 0
    return status, body


def post_test_notification(connection: Connection, target: Target) -> dict[str, Any]:
    body, ids = outbound_message()
    request = (f"POST {target.path} HTTP/1.1\r\nHost: {target.host}\r\n"
               'Content-Type: text/xml; charset=utf-8\r\nSOAPAction: ""\r\n'
               f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body
    try:
        patiently(lambda: connection.tls.sendall(request), connection.sock)
        status, answer = _read_response(connection.tls, connection.sock)
    except (SSL.Error, OSError) as error:
        return {"result": "transport_error", "detail": str(error), "notification_ids": ids}
    result, summary = describe_answer(status, answer)
    return {"result": result, "status": status, "summary": summary,
            "body": answer.decode("utf-8", errors="replace"), "notification_ids": ids}


@dataclass
class ProbeReport:
    target: Target
    connections: list[dict[str, Any]] = field(default_factory=list)
    chains: dict[str, list[Finding]] = field(default_factory=dict)
    summaries: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    post: dict[str, Any] | None = None

    @property
    def findings(self) -> list[Finding]:
        return [finding for findings in self.chains.values() for finding in findings]

    @property
    def failed(self) -> bool:
        return (any(f.severity == "error" for f in self.findings) or len(self.chains) > 1
                or (self.post is not None and self.post["result"] != "ack"))

    def to_json(self) -> dict[str, Any]:
        return {
            "url": f"https://{self.target.host}:{self.target.port}{self.target.path}",
            "connections": self.connections,
            "chains": {key: {"certificates": self.summaries[key],
                             "findings": [f.to_json() for f in findings]}
                       for key, findings in self.chains.items()},
            "different_chains": len(self.chains) > 1,
            "post": self.post,
            "ok": not self.failed,
        }


def probe(url: str, *, ca: Path | None = None, client_cert: Path | None = None,
          client_key: Path | None = None, connections: int = 1, post: bool = True,
          connect: str | None = None, now: dt.datetime | None = None) -> ProbeReport:
    target = Target.parse(url, connect)
    now = now or dt.datetime.now(dt.UTC)
    anchors = public_roots(ca)
    context = _context(client_cert, client_key)
    report = ProbeReport(target)
    for number in range(1, connections + 1):
        connection = open_connection(target, context)
        try:
            key = chain_fingerprint(connection.chain)
            report.connections.append({
                "connection": number, "chain_sha256": key, "tls_version": connection.tls_version,
                "cipher": connection.cipher, "requested_ca_names": connection.requested_ca_names})
            if key not in report.chains:
                report.summaries[key] = [summarize(c, now) for c in connection.chain]
                report.chains[key] = analyse_server_chain(
                    connection.chain, anchors=anchors, public_names=(target.host,), now=now)
            if post and number == connections:
                report.post = post_test_notification(connection, target)
        finally:
            connection.sock.close()
    return report


def write_text(report: ProbeReport, out: TextIO) -> None:
    target = report.target
    out.write(f"omgate probe: https://{target.host}:{target.port}{target.path}\n")
    first = report.connections[0]
    out.write(f"{first['tls_version']}, {first['cipher']}")
    if first["requested_ca_names"]:
        out.write("; the server asks for a client certificate from: "
                  + shown("; ".join(first["requested_ca_names"])))
    out.write("\n")
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
    if report.post is not None:
        out.write(f"\ntest notification {', '.join(report.post['notification_ids'])}: ")
        if report.post["result"] == "transport_error":
            out.write(f"transport error: {shown(report.post['detail'])}\n")
        else:
            body = shown(report.post["body"].strip(), keep="\n")
            out.write(f"{shown(report.post['summary'])}\n{body}\n")
    out.write(f"\n{'FAILED' if report.failed else 'OK'}: {count_line(report.findings)}\n")


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
