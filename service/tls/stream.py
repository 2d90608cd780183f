"""A pyOpenSSL memory-BIO connection over asyncio streams, shaped like a stream pair.

It is both the reader (``read``, ``at_eof``) and the writer (``write``,
``drain``, ``close``, ``get_extra_info``) that hypercorn's connection handler
expects. Reading is pull-based: ciphertext is read from the socket only when
the application asks for plaintext, so a slow consumer slows the sender. Writes
made in one turn of the event loop go out together, as one TLS record and one
send (hypercorn writes an answer's head, body and end one by one).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

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


class AlpnInfo:
    """What hypercorn asks of an ``ssl_object``."""

    def __init__(self, protocol: str | None) -> None:
        self._protocol = protocol

    def selected_alpn_protocol(self) -> str | None:
        return self._protocol


class TlsStream:
    def __init__(self, connection: SSL.Connection, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.connection = connection
        self._reader = reader
        self._writer = writer
        self._eof = False
        self._alpn: AlpnInfo | None = None
        self._unsent: list[bytes] = []  # plaintext written in this turn of the loop
        self._unsent_bytes = 0
        self._failure: str | None = None  # why a write failed after write() returned

    # -- the handshake ----------------------------------------------------------------------

    async def handshake(self) -> None:
        first = True
        while True:
            try:
                self.connection.do_handshake()
            except SSL.WantReadError:
                self._flush()
                data = await self._reader.read(READ_SIZE)
                if not data:
                    raise HandshakeError("client_closed",
                                         "the client closed the connection mid-handshake"
                                         ) from None
                if first and data.startswith(HTTP_METHODS):
                    self._writer.write(PLAIN_HTTP_ANSWER)
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
            protocol = self.connection.get_alpn_proto_negotiated()
            self._alpn = AlpnInfo(protocol.decode() if protocol else "http/1.1")
            return

    async def linger(self, max_bytes: int, seconds: float) -> None:
        """After an alert: read and drop what the client still sends, until it closes (or
        ``max_bytes``, or ``seconds``). A client still writing its flight (a JSSE client
        sends certificate, key exchange and Finished before it reads) would otherwise get
        a connection reset from a close with unread data, and report "Broken pipe"
        instead of the alert."""
        with contextlib.suppress(OSError, TimeoutError):
            await self._writer.drain()
            async with asyncio.timeout(seconds):
                received = 0
                while received < max_bytes:
                    data = await self._reader.read(READ_SIZE)
                    if not data:
                        return
                    received += len(data)

    # -- reader interface -------------------------------------------------------------------

    def at_eof(self) -> bool:
        return self._eof

    async def read(self, size: int = READ_SIZE) -> bytes:
        while not self._eof:
            try:
                data = self.connection.recv(size)
            except SSL.WantReadError:
                self._flush()
                ciphertext = await self._reader.read(READ_SIZE)
                if not ciphertext:
                    self._eof = True
                    break
                self.connection.bio_write(ciphertext)
                continue
            except SSL.ZeroReturnError:
                self._eof = True
                break
            except SSL.Error as error:
                self._eof = True
                raise ConnectionResetError(describe_ssl_error(error)[1]) from None
            self._flush()
            return data
        return b""

    # -- writer interface -------------------------------------------------------------------

    def _flush(self) -> None:
        while True:
            try:
                ciphertext = self.connection.bio_read(READ_SIZE)
            except SSL.WantReadError:
                return
            if self._writer.is_closing():
                return
            self._writer.write(ciphertext)
            if len(ciphertext) < READ_SIZE:  # a memory BIO gives all it holds, up to the size
                return

    def write(self, data: bytes) -> None:
        if self._failure is not None:
            raise ConnectionResetError(self._failure)
        if self._writer.is_closing():
            raise ConnectionResetError("connection closed")
        if not data:
            return
        if not self._unsent:
            asyncio.get_running_loop().call_soon(self._send_unsent)
        self._unsent.append(data)
        self._unsent_bytes += len(data)
        if self._unsent_bytes >= READ_SIZE:
            self._send_unsent()

    def _send_unsent(self) -> None:
        """Encrypt and send what was written since the last time."""
        if not self._unsent:
            return
        data = b"".join(self._unsent)
        self._unsent.clear()
        self._unsent_bytes = 0
        if self._writer.is_closing():
            return
        try:
            self.connection.sendall(data)
        except SSL.Error as error:
            self._failure = describe_ssl_error(error)[1]
            self._writer.close()
            return
        self._flush()

    async def drain(self) -> None:
        self._send_unsent()
        if self._failure is not None:
            raise ConnectionResetError(self._failure)
        await self._writer.drain()

    def write_eof(self) -> None:
        raise NotImplementedError("TLS has no half-close; close() sends close_notify")

    def is_closing(self) -> bool:
        return self._writer.is_closing()

    def close(self) -> None:
        self._send_unsent()
        if self._writer.is_closing():
            return
        with contextlib.suppress(SSL.Error):
            self.connection.shutdown()
        self._flush()
        self._writer.close()

    async def wait_closed(self) -> None:
        await self._writer.wait_closed()

    @property
    def transport(self) -> asyncio.WriteTransport:
        """The socket's transport, for cutting the connection off."""
        return self._writer.transport

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "ssl_object":
            return self._alpn
        return self._writer.get_extra_info(name, default)
