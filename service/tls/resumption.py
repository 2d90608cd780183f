"""Resumed TLS sessions are judged on exactly the chain they authenticated with.

A resumed session carries the client's leaf but not the rest of its chain, and no verify
callback runs. The ticket OpenSSL issues is the session's identity: the client sends it
back to resume. omgate remembers, for every ticket the current TLS context issued, the
chain of the handshake it was issued on, so a resumption is judged on that chain.

Why a memory beside OpenSSL, and why it cannot be turned against the sender: OpenSSL
keeps application data with a session (``SSL_SESSION_set1_ticket_appdata``, session
ex-data), but the bindings pyOpenSSL ships do not reach those functions. Instead, the
memory is tied to the ticket keys: when it is full it is emptied and the TLS context is
rebuilt, which draws new ticket keys, so no ticket OpenSSL can still decrypt is ever
missing from it. A ticket it does not know is declined (the client gets a full
handshake): one OpenSSL cannot decrypt would get one anyway, and one it might (from a
context being retired, or one the memory forgot when it outlived its lifetime) must not
resume. A flood of handshakes can cost the sender a full handshake; it can never make it
be judged on part of its chain, nor refused.

Only the current generation of the context issues tickets the memory knows; session-ID
resumption (TLS 1.2 without tickets) is switched off in the context for the same reason.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

CLIENT_HELLO = 1
NEW_SESSION_TICKET = 4
TLS13 = 0x0304
EXTENSION_SESSION_TICKET = 35
EXTENSION_PRE_SHARED_KEY = 41
MAX_TICKETS = 8192  # two a handshake: a context serves about 4,000 full handshakes
MAX_CHAIN_BYTES = 16 * 1024 * 1024
TICKET_LIFETIME_SECONDS = 7200.0  # the contexts' session timeout (OpenSSL's default too)

C = TypeVar("C")


def _known_as(ticket: bytes) -> bytes:
    return hashlib.sha256(ticket).digest()


class _Reader:
    """Reads big-endian lengths and vectors from a handshake message; raises ValueError when
    the bytes run out (never trusted further than they go)."""

    def __init__(self, data: bytes, position: int = 0) -> None:
        self.data = data
        self.position = position

    def take(self, size: int) -> bytes:
        if size < 0 or self.position + size > len(self.data):
            raise ValueError("truncated handshake message")
        chunk = self.data[self.position:self.position + size]
        self.position += size
        return chunk

    def number(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def vector(self, length_size: int) -> bytes:
        return self.take(self.number(length_size))

    @property
    def left(self) -> int:
        return len(self.data) - self.position


def offered_tickets(client_hello: bytes) -> list[bytes]:
    """The session tickets a ClientHello (type byte included) offers to resume: TLS 1.3
    pre_shared_key identities, or a non-empty TLS 1.2 SessionTicket extension."""
    reader = _Reader(client_hello, 4)
    reader.take(2 + 32)  # legacy_version, random
    reader.vector(1)  # legacy_session_id (session-ID resumption is off)
    reader.vector(2)  # cipher_suites
    reader.vector(1)  # compression_methods
    if reader.left == 0:
        return []
    extensions = _Reader(reader.vector(2))
    tickets: list[bytes] = []
    while extensions.left:
        kind, body = extensions.number(2), extensions.vector(2)
        if kind == EXTENSION_SESSION_TICKET and body:
            tickets.append(body)
        elif kind == EXTENSION_PRE_SHARED_KEY:
            identities = _Reader(_Reader(body).vector(2))
            while identities.left:
                tickets.append(identities.vector(2))
                identities.take(4)  # obfuscated_ticket_age
    return tickets


def issued_ticket(message: bytes, version: int) -> bytes:
    """The ticket of a NewSessionTicket message (type byte included)."""
    reader = _Reader(message, 4)
    reader.take(4)  # ticket_lifetime
    if version >= TLS13:
        reader.take(4)  # ticket_age_add
        reader.vector(1)  # ticket_nonce
    return reader.vector(2)


@dataclass
class _Remembered(Generic[C]):
    chain: C
    issued_at: float


@dataclass
class TicketChains(Generic[C]):
    """The chain behind each ticket the current context generation issued.

    Bounded three ways: ``max_tickets`` tickets, ``max_bytes`` of chains (``chain_size``
    is what one remembered chain weighs: chains are shared by the tickets of one
    handshake, and counted once), and ``lifetime`` seconds, the context's session timeout,
    after which OpenSSL no longer resumes a ticket: an older ticket is forgotten as the
    next is remembered. Tickets are known by their SHA-256: a TLS 1.3 ticket carries the
    session, client certificate included (about a kilobyte).
    """

    max_tickets: int = MAX_TICKETS
    max_bytes: int = MAX_CHAIN_BYTES
    lifetime: float = TICKET_LIFETIME_SECONDS
    now: Callable[[], float] = time.monotonic
    generation: int = 0
    full: bool = False
    # by the ticket's SHA-256, oldest first (a dict keeps the order tickets were issued in)
    _by_ticket: dict[bytes, _Remembered[C]] = field(default_factory=dict)
    _shares: dict[int, tuple[int, int]] = field(default_factory=dict)  # id(chain) -> tickets, bytes
    _weight: int = 0  # the bytes of every remembered chain

    def remember(self, ticket: bytes, chain: C, size: int, generation: int) -> None:
        """Record a ticket issued on a connection of context ``generation``."""
        if generation != self.generation or self.full:
            return  # a retired context's ticket: it will be declined, never trusted
        self._forget_expired()
        tickets, _ = self._shares.get(id(chain), (0, size))
        added = size if tickets == 0 else 0
        if len(self._by_ticket) >= self.max_tickets or self._weight + added > self.max_bytes:
            self.full = True  # from now on nothing unknown resumes; rotate() starts anew
            return
        self._by_ticket[_known_as(ticket)] = _Remembered(chain, self.now())
        self._shares[id(chain)] = (tickets + 1, size)
        self._weight += added

    def _forget_expired(self) -> None:
        oldest_kept = self.now() - self.lifetime
        while self._by_ticket:
            known_as, remembered = next(iter(self._by_ticket.items()))
            if remembered.issued_at >= oldest_kept:
                return
            del self._by_ticket[known_as]
            tickets, size = self._shares.pop(id(remembered.chain))
            if tickets > 1:
                self._shares[id(remembered.chain)] = (tickets - 1, size)
            else:
                self._weight -= size

    def __len__(self) -> int:
        return len(self._by_ticket)

    @property
    def weight(self) -> int:
        """The bytes of the chains remembered."""
        return self._weight

    def chain_for(self, tickets: list[bytes]) -> C | None:
        """The chain the offered tickets stand for, when every one is known and they agree."""
        self._forget_expired()
        found = [self._by_ticket.get(_known_as(ticket)) for ticket in tickets]
        chains = [remembered.chain for remembered in found if remembered is not None]
        if not chains or len(chains) != len(tickets):
            return None
        first = chains[0]
        return first if all(chain == first for chain in chains) else None

    def must_decline(self, tickets: list[bytes]) -> bool:
        """Whether a connection offering ``tickets`` must be kept from resuming: it offers
        one this memory does not know. OpenSSL might still decrypt it (its context is being
        retired, the memory filled up since, or it outlived ``lifetime`` by OpenSSL's clock
        but not by this one); when it cannot, declining costs nothing (a full handshake
        either way)."""
        return bool(tickets) and self.chain_for(tickets) is None

    def rotate(self) -> None:
        """Forget everything: the context was rebuilt with new ticket keys."""
        self._by_ticket.clear()
        self._shares.clear()
        self._weight = 0
        self.full = False
        self.generation += 1
