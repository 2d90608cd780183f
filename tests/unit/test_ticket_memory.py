"""The ticket memory (service/tls/resumption.py) is bounded by count, bytes and lifetime,
and a ticket it does not know never resumes."""

from __future__ import annotations

from dataclasses import dataclass

from service.tls.resumption import TicketChains


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True, eq=False)
class Chain:
    name: str


def memory(clock: Clock, **bounds: int) -> TicketChains[Chain]:
    return TicketChains(now=clock, lifetime=60.0, **bounds)


def test_both_tickets_of_a_handshake_stand_for_its_chain_counted_once():
    chains = memory(Clock())
    chain = Chain("a")
    chains.remember(b"t1", chain, 3000, 0)
    chains.remember(b"t2", chain, 3000, 0)
    assert chains.chain_for([b"t1"]) is chain and chains.chain_for([b"t1", b"t2"]) is chain
    assert (len(chains), chains.weight) == (2, 3000)


def test_a_ticket_is_forgotten_once_it_outlived_the_session_lifetime_and_then_declined():
    clock = Clock()
    chains = memory(clock)
    old, new = Chain("old"), Chain("new")
    chains.remember(b"t1", old, 3000, 0)
    chains.remember(b"t2", old, 3000, 0)
    clock.now += 30
    chains.remember(b"t3", new, 2000, 0)
    clock.now += 31  # t1 and t2 are 61 s old, t3 31 s
    assert chains.chain_for([b"t1"]) is None
    assert chains.must_decline([b"t1"])
    assert chains.chain_for([b"t3"]) is new and not chains.must_decline([b"t3"])
    assert (len(chains), chains.weight) == (1, 2000)


def test_an_unknown_ticket_is_declined_even_when_the_memory_has_room():
    chains = memory(Clock())
    chains.remember(b"t1", Chain("a"), 100, 0)
    assert chains.must_decline([b"forged"])
    assert chains.must_decline([b"t1", b"forged"])  # every offered ticket must be known
    assert not chains.must_decline([])


def test_tickets_of_two_chains_offered_together_resume_neither():
    chains = memory(Clock())
    chains.remember(b"t1", Chain("a"), 100, 0)
    chains.remember(b"t2", Chain("b"), 100, 0)
    assert chains.chain_for([b"t1", b"t2"]) is None and chains.must_decline([b"t1", b"t2"])


def test_the_memory_is_full_at_its_count_or_its_bytes_and_then_remembers_nothing():
    by_count = memory(Clock(), max_tickets=2)
    for number in range(3):
        by_count.remember(b"t%d" % number, Chain(str(number)), 10, 0)
    assert by_count.full and len(by_count) == 2 and by_count.chain_for([b"t2"]) is None
    by_bytes = memory(Clock(), max_bytes=5000)
    by_bytes.remember(b"t1", Chain("a"), 3000, 0)
    by_bytes.remember(b"t2", Chain("b"), 3000, 0)
    assert by_bytes.full and by_bytes.weight == 3000
    by_bytes.rotate()
    assert (by_bytes.full, len(by_bytes), by_bytes.weight, by_bytes.generation) == (
        False, 0, 0, 1)


def test_a_retired_generations_ticket_is_not_remembered():
    chains = memory(Clock())
    chains.rotate()
    chains.remember(b"t1", Chain("a"), 100, 0)
    assert len(chains) == 0 and chains.must_decline([b"t1"])
