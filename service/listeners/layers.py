"""What lies between a connection's socket and its HTTP: nothing, or TLS records.

A :class:`NetworkLayer` turns the bytes the socket received into the bytes HTTP reads,
and the bytes HTTP writes into those the socket sends, without doing any I/O itself
(in the spirit of httpcore's ``AsyncNetworkStream``, but sans-IO: the connection driver,
:mod:`service.listeners.connection`, owns the socket). The plain listeners use
:data:`PLAIN`; the TLS listener an OpenSSL connection's layer
(:class:`service.tls.layer.TlsLayer`), once its handshake is done.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class LayerError(Exception):
    """The peer broke the layer's protocol (a bad TLS record): the connection ends."""


@dataclass(frozen=True, slots=True)
class Received:
    """What the socket's bytes gave: plaintext for HTTP, bytes the layer must send back
    at once (a TLS alert or key update), and whether the peer closed the layer
    (``close_notify``)."""

    data: bytes
    reply: bytes = b""
    closed: bool = False


class NetworkLayer(Protocol):
    def receive(self, data: bytes) -> Received:
        """The socket's next bytes (``b""``: take what the layer already holds)."""

    def send(self, data: bytes) -> bytes:
        """The bytes to put on the socket for ``data``."""

    def close(self) -> bytes:
        """The bytes that end the layer before the socket closes (``close_notify``)."""

    @property
    def scheme(self) -> str:
        """``https`` or ``http``, for the request's ASGI scope."""


class PlainLayer:
    """No layer: the socket's bytes are HTTP's."""

    scheme = "http"

    def receive(self, data: bytes) -> Received:
        return Received(data)

    def send(self, data: bytes) -> bytes:
        return data

    def close(self) -> bytes:
        return b""


PLAIN = PlainLayer()
