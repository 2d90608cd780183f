"""Issue 26: what closed connections held is given back (bench/soak.py's rounds, shortened).

Each case starts its own omgate (one worker, logging at warning) and runs ROUNDS rounds of
CONNECTIONS connections that complete their handshake and send nothing, then close; it
fails when resident memory after a round is more than 10% over round 2's, or when the
descriptors after a round (all of them, those on the inbox, database sessions) are above
what the server held before round 0 plus bench/soak.py's slack.

The cases: `request` and `require` modes with TLS 1.2 and 1.3; with keep-alive messages
(32 connections, 1.5 s) before each round, in `require` with 1.3 and `request` with 1.2;
clients without a certificate (`require` refuses them with HTTP 403, after the
handshake); refused chains and no certificate refused in the handshake
(``reject_with = "handshake"``, rounds of 1,000: see CASES).

Sizes, for about three minutes on two cores (the issue's bar is ten rounds of 500, a
minute and more a case: `make soak SOAK_ARGS="--rounds 10"` runs it): 500 connections a
round, as the issue's; the hold and the settle shortened to 0.5 s and 2 s (the server has
answered every handshake within the hold, frees what closed connections held half a
second after they closed, and has glibc return the freed pages within a second of that),
so a round takes about 3.5 s; six rounds leave three to compare with
round 2, 1,500 connections: a leak of 10 KiB a connection (a quarter of what OpenSSL
keeps for an open one) shows as 15 MiB, over the 10% of a server of about 130 MiB.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from client_pki import ClientPki
from harness import ROOT

sys.path.insert(0, str(ROOT / "bench"))

import soak

pytestmark = [pytest.mark.slow, pytest.mark.soak]

CONNECTIONS = 500
ROUNDS = 6
KEEPALIVE_SECONDS = 1.5  # of keep-alive messages (32 connections) before each round


@dataclass(frozen=True)
class Case:
    mode: soak.Mode
    tls: soak.TlsVersion
    clients: soak.Clients = "valid"
    keepalive_seconds: float = 0.0
    reject_with: soak.RejectWith = "http"
    connections: int = CONNECTIONS

    @property
    def label(self) -> str:
        load = "-keepalive" if self.keepalive_seconds else ""
        refusal = "-refused-in-handshake" if self.reject_with == "handshake" else ""
        return f"{self.mode}-tls{self.tls}-{self.clients}{load}{refusal}"


CASES = [
    *(Case(mode, tls) for mode in ("request", "require") for tls in ("1.2", "1.3")),
    Case("require", "1.3", keepalive_seconds=KEEPALIVE_SECONDS),
    Case("request", "1.2", keepalive_seconds=KEEPALIVE_SECONDS),
    Case("require", "1.3", clients="none"),  # refused by HTTP 403: the handshake completes
    # Resident memory climbs for the first 2,000 or so handshakes refused, then levels off
    # (measured on main at 4bd52a1, rounds of 500: 95 MiB after round 2, 105 after round 3,
    # flat after; the allocator's or a bounded cache's: not known). Rounds of 1,000 reach
    # the level before round 2, so what is judged is what refusals leave for good.
    Case("require", "1.2", clients="mixed", reject_with="handshake", connections=1000),
]


@pytest.fixture(scope="module")
def pki(dev_pki: Path, client_pki: ClientPki) -> soak.Pki:
    return soak.Pki(dev_pki, client_pki)


@pytest.fixture
def server(pki: soak.Pki, tmp_path: Path, server_log_dir: Path,
           request: pytest.FixtureRequest) -> Iterator[soak.SoakServer]:
    case: Case = request.param
    log = server_log_dir / f"soak-{case.label}.log"  # the SessionId sweep reads it too
    with soak.soak_server(pki, tmp_path, case.mode, reject_with=case.reject_with,
                          log=log) as running:
        yield running


@pytest.mark.parametrize(("server", "case"), [(case, case) for case in CASES],
                         ids=[case.label for case in CASES], indirect=["server"])
def test_closed_connections_give_back_memory_and_descriptors(server, case):
    plan = soak.RoundPlan(rounds=ROUNDS, connections=case.connections, tls=case.tls,
                          clients=case.clients, hold=0.5, settle=2.0,
                          keepalive_seconds=case.keepalive_seconds)
    lines: list[str] = []
    baseline, results = soak.run_rounds(server, plan, lines.append)
    report = "\n".join(lines)
    print(report)
    assert all(result.opened + result.failed == case.connections for result in results)
    if case.clients == "valid":  # every valid client completes its handshake
        assert all(result.opened == case.connections for result in results), report
    if case.reject_with == "handshake":  # TLS 1.2: the server's alert ends every one
        assert all(result.failed == case.connections for result in results), report
    assert soak.judge_rounds(baseline, results) == [], report
