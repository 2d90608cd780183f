"""Client connections for `omgate probe` and `omgate send`: TLS with pyOpenSSL, HTTP/1.1
framed by h11.

A client certificate chain is presented as its file orders it. TLS sends the certificate
the key belongs to first (the handshake proves that key with it), so a file that lists it
elsewhere has it moved to the front, the others keeping their order; a key that belongs
to none of the file's certificates is said so in words, not as OpenSSL's
``KEY_VALUES_MISMATCH``.
"""

from __future__ import annotations

import re
import select
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, TypeVar

import h11
from cryptography import x509
from OpenSSL import SSL, crypto

from service.certfiles import (
    CertificateFileError,
    PresentableKey,
    load_certificates,
    load_private_key,
)
from service.clientauth.serverchain import covers
from service.tls.context import openssl_reason

MAX_RESPONSE_BYTES = 1024 * 1024
T = TypeVar("T")
# SSL_MODE_NO_AUTO_CHAIN from OpenSSL's ssl.h (0x8 since OpenSSL 1.0.2; pyOpenSSL names no
# constant for it, and Context.set_mode passes any mode on): without it OpenSSL completes a
# chain of one certificate with issuers from the context's trust store (the roots --ca
# loads), and the client presents certificates its file does not hold.
SSL_MODE_NO_AUTO_CHAIN = 0x00000008


class ClientChainError(ValueError):
    """A client certificate or key that cannot be presented; the message says why."""


@dataclass(frozen=True)
class ClientChain:
    """A client certificate chain in the order it will be presented (the key's first)."""

    certificates: tuple[x509.Certificate, ...]
    key: PresentableKey
    file_position: int  # where the file listed the key's certificate (0: first)

    def reordering_note(self, cert_file: Path) -> str | None:
        """A sentence when the order presented is not the file's, else None."""
        if self.file_position == 0:
            return None
        leaf = self.certificates[0].subject.rfc4514_string()
        return (f"the key belongs to certificate {self.file_position} of {cert_file} ({leaf}); "
                "TLS sends that certificate first, so it goes first, the others follow in "
                "the file's order")


def load_client_chain(cert_file: Path, key_file: Path | None) -> ClientChain:
    """The certificates of ``cert_file`` and the key of ``key_file`` (or of ``cert_file``
    when it holds both)."""
    try:
        certificates = load_certificates(cert_file, "--client-cert")
    except CertificateFileError as error:
        raise ClientChainError(str(error)) from None
    key_path = key_file or cert_file
    try:
        key = load_private_key(key_path, "--client-key" if key_file else "--client-cert")
    except CertificateFileError as error:
        raise ClientChainError(str(error)) from None
    public = key.public_key()
    position = next((index for index, certificate in enumerate(certificates)
                     if certificate.public_key() == public), None)
    if position is None:
        subjects = "; ".join(c.subject.rfc4514_string() for c in certificates)
        raise ClientChainError(
            f"the key in {key_path} belongs to none of the {len(certificates)} certificates in "
            f"{cert_file} ({subjects}): give the key of the client certificate")
    ordered = (certificates[position], *certificates[:position], *certificates[position + 1:])
    return ClientChain(ordered, key, position)


def client_context(chain: ClientChain | None, *, verify_server: bool,
                   server_roots: Path | None = None) -> SSL.Context:
    """TLS 1.2 or newer, HTTP/1.1 by ALPN, presenting ``chain`` exactly in its order. With
    ``verify_server`` the server's chain must verify against ``server_roots`` (or the
    system's roots); the name is checked by :func:`connect`."""
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    context.set_min_proto_version(SSL.TLS1_2_VERSION)
    context.set_mode(SSL_MODE_NO_AUTO_CHAIN)  # exactly the file's certificates, none added
    context.set_alpn_protos([b"http/1.1"])
    if verify_server:
        context.set_verify(SSL.VERIFY_PEER)
        if server_roots is None:
            context.set_default_verify_paths()
        else:
            _trust(context, server_roots)
    else:
        context.set_verify(SSL.VERIFY_NONE)  # the caller judges the chain itself
    if chain is not None:
        context.use_certificate(crypto.X509.from_cryptography(chain.certificates[0]))
        context.use_privatekey(crypto.PKey.from_cryptography_key(chain.key))
        for certificate in chain.certificates[1:]:
            context.add_extra_chain_cert(crypto.X509.from_cryptography(certificate))
    return context


def _trust(context: SSL.Context, roots: Path) -> None:
    try:
        certificates = load_certificates(roots, "--ca")
    except CertificateFileError as error:
        raise ClientChainError(str(error)) from None
    store = context.get_cert_store()
    if store is None:  # OpenSSL gives every context one; pyOpenSSL's type allows for none
        raise ClientChainError("this OpenSSL context has no certificate store")
    for certificate in certificates:
        store.add_cert(crypto.X509.from_cryptography(certificate))


def _remaining(deadline: float) -> float:
    """Seconds left until ``deadline`` (time.monotonic); TimeoutError once it has passed."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("no whole answer in time")
    return remaining


def patiently(call: Callable[[], T], sock: socket.socket, deadline: float) -> T:
    """Run a pyOpenSSL call on a socket until ``deadline``, waiting while it wants I/O."""
    while True:
        try:
            return call()
        except (SSL.WantReadError, SSL.WantWriteError) as want:
            remaining = _remaining(deadline)
            readable = isinstance(want, SSL.WantReadError)
            select.select([sock] if readable else [], [] if readable else [sock], [],
                          remaining)


class Transport(Protocol):
    """Bytes to and from a server, each call done by ``deadline`` (time.monotonic): one
    deadline for a whole exchange, so a server trickling its answer cannot stretch it."""

    def sendall(self, data: bytes, deadline: float) -> None: ...

    def recv(self, size: int, deadline: float) -> bytes: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class PlainTransport:
    sock: socket.socket

    def sendall(self, data: bytes, deadline: float) -> None:
        self.sock.settimeout(_remaining(deadline))
        self.sock.sendall(data)

    def recv(self, size: int, deadline: float) -> bytes:
        self.sock.settimeout(_remaining(deadline))
        return self.sock.recv(size)

    def close(self) -> None:
        self.sock.close()


@dataclass(frozen=True)
class TlsTransport:
    tls: SSL.Connection
    sock: socket.socket

    def sendall(self, data: bytes, deadline: float) -> None:
        patiently(lambda: self.tls.sendall(data), self.sock, deadline)

    def recv(self, size: int, deadline: float) -> bytes:
        try:
            return patiently(lambda: self.tls.recv(size), self.sock, deadline)
        except (SSL.ZeroReturnError, SSL.SysCallError):
            return b""

    def close(self) -> None:
        self.sock.close()


def connect(address: str, port: int, server_name: str, context: SSL.Context,
            timeout: float, *, check_name: bool, app_data: object = None) -> TlsTransport:
    """A completed TLS handshake with SNI ``server_name``; with ``check_name`` the server's
    certificate must cover that name. ``app_data`` is what the context's callbacks find on
    the connection. OSError when nothing answers, SSL.Error when the handshake fails."""
    sock = socket.create_connection((address, port), timeout=timeout)
    tls = SSL.Connection(context, sock)
    tls.set_app_data(app_data)
    tls.set_tlsext_host_name(server_name.encode("idna"))
    tls.set_connect_state()
    try:
        patiently(tls.do_handshake, sock, time.monotonic() + timeout)
        leaf = tls.get_peer_certificate(as_cryptography=True)
        if check_name and (leaf is None or not covers(leaf, server_name)):
            raise SSL.Error(f"the server's certificate does not cover {server_name!r}")
    except BaseException:
        sock.close()
        raise
    return TlsTransport(tls, sock)


FailureKind = Literal["closed", "unrecognized_name", "not_tls", "server_unverified",
                      "client_refused", "alert", "other"]
# The alerts a server sends about the client's certificate (RFC 8446, 6.2; RFC 5246, 7.2).
CLIENT_CERTIFICATE_ALERTS = frozenset({
    "bad_certificate", "unsupported_certificate", "certificate_revoked", "certificate_expired",
    "certificate_unknown", "unknown_ca", "access_denied", "decrypt_error",
    "certificate_required"})
_ALERT = re.compile(r"alert ([a-z0-9 ]+)$")


@dataclass(frozen=True)
class TlsFailure:
    """Why a TLS connection failed, in words that say what to change (OpenSSL's own text,
    such as ``[('SSL routines', '', 'tlsv1 unrecognized name')]``, says neither)."""

    kind: FailureKind
    alert: str | None  # the TLS alert the server sent ("unknown_ca"), if it sent one
    words: str

    @classmethod
    def of(cls, error: Exception, *, server_name: str, presented: bool,
           roots: str = "the system's roots") -> TlsFailure:
        """``error`` from the handshake or the first exchange; ``presented``: whether a
        client certificate was presented; ``roots``: what the server's chain was checked
        against."""
        if isinstance(error, SSL.SysCallError | SSL.ZeroReturnError):
            return cls("closed", None, (
                "the server closed the connection during the TLS handshake without a word. A "
                "listener that expects a PROXY protocol header first (omgate's "
                "server.proxy_protocol, behind HAProxy's send-proxy or an AWS NLB) does that "
                "to a client that sends none: connect through the load balancer that adds the "
                "header, or to a listener without it (a server at its connection limit also "
                "closes so)"))
        reason = openssl_reason(error)
        alert = _ALERT.search(reason)
        name = alert.group(1).replace(" ", "_") if alert else None
        if "unrecognized name" in reason:
            return cls("unrecognized_name", "unrecognized_name", (
                f"the server does not answer to the name {server_name} (TLS alert "
                "unrecognized_name, in reply to the name this client sent, SNI): use a name "
                f"it serves in the URL (--connect reaches another address under it), or add "
                f"{server_name} to the server's names (omgate: server.public_names)"))
        if any(text in reason for text in ("wrong version number", "packet length too long",
                                           "http request")):
            return cls("not_tls", None, "the port does not speak TLS (plain HTTP?): use "
                                        "http:// for a plain listener, or the TLS port")
        if "certificate verify failed" in reason:
            return cls("server_unverified", None, (
                f"the server's certificate does not verify against {roots}: give --ca the "
                "CA that issues it (or its root), or see what the server sends with "
                "`omgate probe`"))
        if name in CLIENT_CERTIFICATE_ALERTS and (presented or name == "certificate_required"):
            if not presented:
                return cls("client_refused", name, (
                    "the server requires a client certificate and none was presented (TLS "
                    "alert certificate_required): give --client-cert and --client-key"))
            return cls("client_refused", name, (
                f"the server refused the client certificate presented (TLS alert {name}): "
                "its log says why (omgate: the client_auth.decision line names every "
                "finding), and `omgate inspect` of the chain file shows them before a deploy"))
        if name == "handshake_failure":
            return cls("alert", name, (
                "the server ended the handshake (TLS alert handshake_failure): no protocol "
                "version or cipher in common, or, in TLS 1.2, a client certificate it "
                "requires was not presented" + (" or refused" if presented else "")))
        if name == "protocol_version":
            return cls("alert", name, "the server speaks no TLS version this client offers "
                                      "(1.2 or newer) (TLS alert protocol_version)")
        if name is not None:
            return cls("alert", name, f"the server ended the connection with the TLS alert "
                                      f"{name} ({reason})")
        return cls("other", None, f"TLS failed: {reason}")


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes


class HttpClient:
    """HTTP/1.1 requests over one connection, kept open while the server allows."""

    def __init__(self, transport: Transport, host: str, *, timeout: float) -> None:
        self.transport = transport
        self.host = host
        self.timeout = timeout  # seconds for a whole exchange: the request and its answer
        self._http = h11.Connection(h11.CLIENT)

    @property
    def reusable(self) -> bool:
        return self._http.our_state is h11.IDLE and self._http.their_state is h11.IDLE

    def post(self, path: str, body: bytes, headers: list[tuple[str, str]]) -> Answer:
        deadline = time.monotonic() + self.timeout
        request = h11.Request(method="POST", target=path, headers=[
            ("Host", self.host), ("Content-Length", str(len(body))), *headers])
        self.transport.sendall(self._http.send(request) + self._http.send(h11.Data(data=body))
                               + self._http.send(h11.EndOfMessage()), deadline)
        answer = self._read_answer(deadline)
        if self._http.our_state is h11.DONE and self._http.their_state is h11.DONE:
            self._http.start_next_cycle()
        return answer

    def _read_answer(self, deadline: float) -> Answer:
        status, body = 0, b""
        while True:
            event = self._http.next_event()
            if event is h11.NEED_DATA:
                self._http.receive_data(self.transport.recv(65536, deadline))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_RESPONSE_BYTES:
                    raise h11.RemoteProtocolError(
                        f"the answer is larger than {MAX_RESPONSE_BYTES} bytes")
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                return Answer(status, body)

    def close(self) -> None:
        self.transport.close()
