"""The listening sockets of ``omgate serve``: bound once, by the supervisor, and inherited
by every worker. No SO_REUSEPORT: a port another process listens on stops the start
instead of being shared with it."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from service.config import BindAddress, Config

LISTEN_BACKLOG = 1024


class ListenError(Exception):
    """A listening address cannot be bound; the message names it and its key."""


@dataclass(frozen=True)
class Listeners:
    """The listening sockets of server.bind, server.plain_bind and server.health_bind."""

    tls: tuple[socket.socket, ...]
    plain: tuple[socket.socket, ...]
    health: tuple[socket.socket, ...]
    admin: tuple[socket.socket, ...] = ()  # server.admin_bind: the console

    def close(self) -> None:
        for sock in (*self.tls, *self.plain, *self.health, *self.admin):
            sock.close()


def _failure(error: OSError) -> str:
    if isinstance(error, socket.gaierror) or not error.errno:
        return str(error.strerror or error).lower()
    return os.strerror(error.errno).lower()  # "address already in use"


def _bind(address: BindAddress, key: str) -> list[socket.socket]:
    """Listen on every address ``address.host`` resolves to (as asyncio would), without
    SO_REUSEPORT: an address another process listens on is refused."""
    bound: list[socket.socket] = []
    try:
        resolved = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM,
                                      flags=socket.AI_PASSIVE)
        for family, sockaddr in dict.fromkeys((info[0], info[4]) for info in resolved):
            bound.append(socket.create_server(sockaddr, family=family, backlog=LISTEN_BACKLOG))
    except OSError as error:
        for sock in bound:
            sock.close()
        raise ListenError(f"cannot listen on {address} ({key}): {_failure(error)}") from None
    return bound


def bind_listeners(config: Config) -> Listeners:
    """Bind every listener once, here; the workers inherit the sockets."""
    opened: list[socket.socket] = []

    def bind_all(addresses: tuple[BindAddress, ...], key: str) -> tuple[socket.socket, ...]:
        sockets = [sock for address in addresses for sock in _bind(address, key)]
        opened.extend(sockets)
        return tuple(sockets)

    try:
        health = (config.server.health_bind,) if config.server.health_bind else ()
        admin = (config.server.admin_bind,) if config.server.admin_bind else ()
        return Listeners(tls=bind_all(config.server.bind, "[server] bind"),
                         plain=bind_all(config.server.plain_bind, "[server] plain_bind"),
                         health=bind_all(health, "[server] health_bind"),
                         admin=bind_all(admin, "[server] admin_bind"))
    except ListenError:
        for sock in opened:
            sock.close()
        raise
