"""The OpenSSL hooks pyOpenSSL does not wrap, in one place.

- a message callback that keeps the client's Certificate message, so the chain
  *as presented* is known even when the handshake is then refused;
- a raw verify callback that records every ``(depth, error)`` and lets the
  connection's state decide, setting the X509 error OpenSSL turns into the alert;
- a server-name callback that can refuse an unknown SNI with ``unrecognized_name``.

These use pyOpenSSL internals (``OpenSSL._util``, ``Context._context``,
``Connection._ssl``, ``Connection._reverse_mapping``), which is why they live
here (service/tls/opinion.py sets a verification time the same way) and are covered by
their own tests; tests/unit/test_tripwires.py names every one with its shape. Exceptions
never escape a callback into OpenSSL: they are stored on the connection state.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from OpenSSL import SSL
from OpenSSL._util import ffi, lib
from OpenSSL.crypto import FILETYPE_ASN1, X509, dump_certificate

from service.clientauth import VerifyResult
from service.clientauth.names import name_matches
from service.clientauth.presented import (
    MAX_PRESENTED_CERTIFICATES,
    NOT_READ,
    PresentedChain,
    load_chain,
)
from service.text import clipped
from service.tls.resumption import (
    CLIENT_HELLO,
    NEW_SESSION_TICKET,
    TLS13,
    issued_ticket,
    offered_tickets,
)

HANDSHAKE = 22
CERTIFICATE_MESSAGE = 11
ALERT_UNRECOGNIZED_NAME = 112
X509_V_OK = 0


@dataclass
class ConnectionState:
    """What the hooks learn about one connection (mutable, owned by that connection)."""

    verify_results: list[VerifyResult] = field(default_factory=list)
    presented_der: list[bytes] | None = None
    refused_sni: str | None = None
    problems: list[str] = field(default_factory=list)
    # Called on every verify-callback step; returns an X509 error to fail the handshake
    # with, or None to continue. Set by the listener.
    verify_step: Callable[[ConnectionState, VerifyResult], int | None] | None = None
    # The client-auth verdict when it was reached inside the handshake (by verify_step).
    verdict: Any = None
    # Resumption: told the tickets a ClientHello offers, returns True to keep the
    # connection from resuming (a full handshake instead); told each ticket issued.
    on_client_hello: Callable[[list[bytes]], bool] | None = None
    on_ticket: Callable[[bytes], None] | None = None


def state_of(ssl_pointer: Any) -> ConnectionState | None:
    connection = SSL.Connection._reverse_mapping.get(ssl_pointer)
    if connection is None:
        return None
    state = connection.get_app_data()
    return state if isinstance(state, ConnectionState) else None


def parse_certificate_message(body: bytes, version: int) -> list[bytes]:
    """DER certificates of a TLS Certificate handshake message (type byte included)."""
    position = 4  # type (1) + length (3)
    if version >= TLS13:
        context_length = body[position]
        position += 1 + context_length
    list_end = position + 3 + int.from_bytes(body[position:position + 3], "big")
    position += 3
    certificates: list[bytes] = []
    while position + 3 <= list_end:
        if len(certificates) == MAX_PRESENTED_CERTIFICATES:
            certificates.append(NOT_READ)  # the rest is judged as one unreadable entry
            break
        length = int.from_bytes(body[position:position + 3], "big")
        position += 3
        certificates.append(body[position:position + length])
        position += length
        if version >= TLS13:  # per-certificate extensions
            position += 2 + int.from_bytes(body[position:position + 2], "big")
    return certificates


def _subject_of(certificate_pointer: Any) -> str:
    lib.X509_up_ref(certificate_pointer)  # the X509 wrapper below takes one reference
    certificate = X509._from_raw_x509_ptr(certificate_pointer)
    der = dump_certificate(FILETYPE_ASN1, certificate)
    # each certificate of a chain seen again is read once; the large ones, which any client
    # may send, are not kept
    return _subject_of_der(der) if len(der) <= NAMED_CERTIFICATE_BYTES else _read_subject(der)


NAMED_CERTIFICATE_BYTES = 8 * 1024


def _read_subject(der: bytes) -> str:
    """The subject as OpenSSL's complaints name it, clipped: a client chooses its length,
    and every decision kept and every line logged holds it."""
    try:
        return clipped(x509.load_der_x509_certificate(der).subject.rfc4514_string())
    except ValueError:
        return "(unparseable certificate)"


_subject_of_der = functools.lru_cache(maxsize=256)(_read_subject)


def error_text(error: int) -> str:
    return ffi.string(lib.X509_verify_cert_error_string(error)).decode(errors="replace")


def _client_hello(state: ConnectionState, message: bytes, ssl_pointer: Any) -> None:
    if state.on_client_hello is None:
        return
    try:
        decline = state.on_client_hello(offered_tickets(message))
    except ValueError as error:  # unreadable here: resume nothing from it
        state.problems.append(f"client hello: {error}")
        decline = True
    if decline:
        # Its tickets are then looked up in the (disabled) session cache: a full handshake.
        lib.SSL_set_options(ssl_pointer, lib.SSL_OP_NO_TICKET)


_READ_MESSAGES = {CERTIFICATE_MESSAGE: "certificate message", CLIENT_HELLO: "client hello"}


@ffi.callback("void (*)(int, int, int, const void *, size_t, SSL *, void *)")
def _message_callback(write_p: int, version: int, content_type: int, buffer: Any,
                      length: int, ssl_pointer: Any, _arg: Any) -> None:
    if content_type != HANDSHAKE or length < 4:
        return
    kind = ffi.buffer(buffer, 1)[0][0]
    if (write_p and kind != NEW_SESSION_TICKET) or (not write_p and kind not in _READ_MESSAGES):
        return
    state = state_of(ssl_pointer)
    if state is None:
        return
    try:
        message = bytes(ffi.buffer(buffer, length))
        if write_p:
            if state.on_ticket is not None:
                state.on_ticket(issued_ticket(message, version))
        elif kind == CLIENT_HELLO:
            _client_hello(state, message, ssl_pointer)
        else:
            state.presented_der = parse_certificate_message(message, version)
    except Exception as error:  # noqa: BLE001 - never raise into OpenSSL
        what = "new session ticket" if write_p else _READ_MESSAGES[kind]
        state.problems.append(f"{what}: {error}")


@ffi.callback("int (*)(int, X509_STORE_CTX *)")
def _verify_callback(_preverify_ok: int, store: Any) -> int:
    ssl_pointer = lib.X509_STORE_CTX_get_ex_data(store, lib.SSL_get_ex_data_X509_STORE_CTX_idx())
    state = state_of(ssl_pointer)
    if state is None:
        return 1
    try:
        error = lib.X509_STORE_CTX_get_error(store)
        result = VerifyResult(
            depth=lib.X509_STORE_CTX_get_error_depth(store),
            error=error,
            error_text=error_text(error),
            subject=_subject_of(lib.X509_STORE_CTX_get_current_cert(store)),
        )
        state.verify_results.append(result)
        refusal = state.verify_step(state, result) if state.verify_step else None
    except Exception as error:  # noqa: BLE001 - the HTTP layer decides again
        state.problems.append(f"verify callback: {error}")
        refusal = None
    if refusal is not None:
        lib.X509_STORE_CTX_set_error(store, refusal)
        return 0
    lib.X509_STORE_CTX_set_error(store, X509_V_OK)
    return 1


@dataclass
class ServerNameCheck:
    """Refuses a handshake whose SNI is none of ``public_names`` (empty: any name)."""

    public_names: tuple[str, ...]
    callback: Any = None

    def __post_init__(self) -> None:
        @ffi.callback("int (*)(SSL *, int *, void *)")
        def check(ssl_pointer: Any, alert: Any, _arg: Any) -> int:
            raw = lib.SSL_get_servername(ssl_pointer, lib.TLSEXT_NAMETYPE_host_name)
            if raw == ffi.NULL or not self.public_names:
                return lib.SSL_TLSEXT_ERR_OK
            name = ffi.string(raw).decode("ascii", errors="replace")
            if any(name_matches(name, pattern) for pattern in self.public_names):
                return lib.SSL_TLSEXT_ERR_OK
            state = state_of(ssl_pointer)
            if state is not None:
                state.refused_sni = name
            alert[0] = ALERT_UNRECOGNIZED_NAME
            return lib.SSL_TLSEXT_ERR_ALERT_FATAL

        self.callback = check


@functools.cache
def server_name_check(public_names: tuple[str, ...]) -> ServerNameCheck:
    """The check for these names, made once and never freed: OpenSSL calls a context's
    callback for every connection made from it, after a newer context (new ticket keys, a
    reloaded certificate) has replaced it, so a check freed with the old context left its
    connections calling freed memory. The names come from the configuration: few."""
    return ServerNameCheck(public_names)


def install(context: SSL.Context, *, verify_mode: int, server_names: ServerNameCheck) -> None:
    """Attach the hooks to a context; ``verify_mode`` 0 means no CertificateRequest."""
    lib.SSL_CTX_set_msg_callback(context._context, _message_callback)
    if verify_mode:
        lib.SSL_CTX_set_verify(context._context, verify_mode, _verify_callback)
    else:
        lib.SSL_CTX_set_verify(context._context, SSL.VERIFY_NONE, ffi.NULL)
    lib.SSL_CTX_set_tlsext_servername_callback(context._context, server_names.callback)


def unread_bytes(connection: SSL.Connection) -> int:
    """Bytes of records in the connection's incoming memory BIO that OpenSSL has not read.

    Asking spares the read that would only fail with WantReadError: pyOpenSSL raises it
    as an exception, and two of them (a read, and the write BIO's) cost 5-9 µs of a
    keep-alive exchange (docs/PERFORMANCE.md, "TLS records read without WantReadError").
    pyOpenSSL has no call for it, hence its internals."""
    return int(lib.BIO_get_mem_data(connection._into_ssl, ffi.NULL))


def unsent_bytes(connection: SSL.Connection) -> int:
    """Bytes OpenSSL wrote to the connection's outgoing memory BIO that are not sent yet."""
    return int(lib.BIO_get_mem_data(connection._from_ssl, ffi.NULL))


def release_handshake_buffers(connection: SSL.Connection) -> bool:
    """Replace the connection's two memory BIOs with empty ones, once its handshake is done.

    A memory BIO keeps the largest buffer it ever held: after a handshake with a client
    chain, about 6 KiB a connection, for as long as the connection stays open (most are
    idle keep-alive ones) and used by nothing. pyOpenSSL has no call for it, hence its
    internals. Only when both are empty (a client may send its first request with its
    Finished, and that must not be lost); says whether they were replaced.
    """
    if unread_bytes(connection) or unsent_bytes(connection):
        return False
    into_ssl, from_ssl = lib.BIO_new(lib.BIO_s_mem()), lib.BIO_new(lib.BIO_s_mem())
    if into_ssl == ffi.NULL or from_ssl == ffi.NULL:
        for bio in (into_ssl, from_ssl):
            if bio != ffi.NULL:
                lib.BIO_free(bio)
        return False
    lib.SSL_set_bio(connection._ssl, into_ssl, from_ssl)  # frees the two it held
    connection._into_ssl, connection._from_ssl = into_ssl, from_ssl
    return True


def session_reused(connection: SSL.Connection) -> bool:
    return bool(lib.SSL_session_reused(connection._ssl))


def presented_chain(state: ConnectionState) -> PresentedChain | None:
    """The chain from the Certificate message, leaf first, order and duplicates kept."""
    return None if state.presented_der is None else load_chain(state.presented_der)
