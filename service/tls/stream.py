"""A pyOpenSSL memory-BIO connection's handshake over asyncio streams.

The handshake reads the socket through the streams a listener accepted (a PROXY header
may come first); once it is done, the connection serves HTTP as a network layer
(:class:`service.tls.layer.TlsLayer`) on the connection's own driver.
"""

from __future__ import annotations

import asyncio
import contextlib

from OpenSSL import SSL

from service.tls import openssl_glue

READ_SIZE = 65536
HTTP_METHODS = (b"GET ", b"POST ", b"PUT ", b"HEAD ", b"DELETE ", b"OPTIONS ", b"PATCH ",
                b"CONNECT ", b"TRACE ")
PLAIN_HTTP_ANSWER = (
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Connection: close\r\nContent-Length: 48\r\n\r\n"
    b"This port speaks HTTPS: use an https:// URL.\r\n\r\n"
)


class HandshakeError(Exception):
    """The TLS handshake did not complete; ``reason`` is a stable code, ``detail`` is OpenSSL's.
    ``alert_sent``: omgate sent the client an alert that names the problem."""

    def __init__(self, reason: str, detail: str, *, alert_sent: bool = False) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.alert_sent = alert_sent


_REASONS = (
    ("http request", "plain_http"),
    ("unsupported protocol", "protocol_version"),
    ("wrong version number", "not_tls"),
    ("no shared cipher", "no_shared_cipher"),
    ("no suitable signature algorithm", "no_shared_cipher"),
    ("peer did not return a certificate", "no_client_cert"),
    ("certificate verify failed", "client_cert_rejected"),
    ("callback failed", "unknown_sni"),
    ("clienthello tlsext", "unknown_sni"),
    ("unexpected eof", "client_closed"),
)


def describe_ssl_error(error: SSL.Error) -> tuple[str, str]:
    parts = []
    for entry in error.args[0] if error.args and isinstance(error.args[0], list) else []:
        if isinstance(entry, tuple) and entry:
            parts.append(str(entry[-1]))
    detail = "; ".join(parts) or str(error) or type(error).__name__
    lowered = detail.lower()
    for needle, reason in _REASONS:
        if needle in lowered:
            return reason, detail
    if "alert" in lowered:
        return "client_alert", detail
    return "tls_error", detail


def outgoing(connection: SSL.Connection) -> bytes:
    """Every byte OpenSSL wrote to the connection's outgoing memory BIO."""
    parts = []
    while openssl_glue.unsent_bytes(connection):
        parts.append(connection.bio_read(READ_SIZE))
    return parts[0] if len(parts) == 1 else b"".join(parts)


class TlsStream:
    """A TLS connection's handshake on the streams its listener accepted."""

    def __init__(self, connection: SSL.Connection, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.connection = connection
        self.reader = reader
        self.writer = writer

    # -- the handshake ----------------------------------------------------------------------

    async def handshake(self) -> None:
        first = True
        while True:
            try:
                self.connection.do_handshake()
            except SSL.WantReadError:
                self._flush()
                data = await self.reader.read(READ_SIZE)
                if not data:
                    raise HandshakeError("client_closed",
                                         "the client closed the connection mid-handshake"
                                         ) from None
                if first and data.startswith(HTTP_METHODS):
                    self.writer.write(PLAIN_HTTP_ANSWER)
                    raise HandshakeError("plain_http", "plain HTTP sent to the HTTPS port"
                                         ) from None
                first = False
                self.connection.bio_write(data)
                continue
            except SSL.Error as error:
                self._flush()  # the alert OpenSSL queued
                raise HandshakeError(*describe_ssl_error(error), alert_sent=True) from None
            self._flush()
            openssl_glue.release_handshake_buffers(self.connection)
            return

    async def linger(self, max_bytes: int, seconds: float) -> None:
        """After an alert: read and drop what the client still sends, until it closes (or
        ``max_bytes``, or ``seconds``). A client still writing its flight (a JSSE client
        sends certificate, key exchange and Finished before it reads) would otherwise get
        a connection reset from a close with unread data, and report "Broken pipe"
        instead of the alert."""
        with contextlib.suppress(OSError, TimeoutError):
            await self.writer.drain()
            async with asyncio.timeout(seconds):
                received = 0
                while received < max_bytes:
                    data = await self.reader.read(READ_SIZE)
                    if not data:
                        return
                    received += len(data)

    def _flush(self) -> None:
        ciphertext = outgoing(self.connection)
        if ciphertext and not self.writer.is_closing():
            self.writer.write(ciphertext)

    def close(self) -> None:
        """Close a connection that was not served (its handshake failed, or it was
        refused after it): ``close_notify``, then the socket."""
        if self.writer.is_closing():
            return
        with contextlib.suppress(SSL.Error):
            self.connection.shutdown()
        self._flush()
        self.writer.close()
