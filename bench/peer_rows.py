"""The rows of `make bench` against the peer stack (issue 23), omgate / peer.

The peer (bench/stacks.py, bench/peer_app.py) is nginx terminating mutual TLS in front of
gunicorn with one uvicorn worker serving a Starlette app that commits each message to
SQLite. Every row is interleaved omgate / peer / omgate / peer on servers that stay up
for the row (the idle one costs nothing), each server pinned to core 0 and the load to
core 1, and prints omgate / peer for both rounds with the 1-minute load average at the
row's start and the issue's target beside each ratio:

- (a) keep-alive, 1 notification per message, 32 connections, durable: messages/s and
  CPU per message (every server process: nginx and gunicorn's master and worker for the
  peer);
- (b) keep-alive, 100 notifications per message, 32 connections: notifications/s;
- (c) a new TLS connection with a client certificate per message, 16 connections:
  connections/s;
- (d) 500 idle TLS connections with a client certificate, twice on the same servers:
  resident memory (RSS, and PSS from /proc/PID/smaps_rollup) with them open, and its
  growth from the first round to the second;
- (e) omgate behind the same nginx (mutual TLS there, the leaf forwarded to omgate's
  plain listener) against the peer on row (a)'s load.

Under the verdicts, for rows (a), (b) and (e): the CPU a message their rate target leaves
omgate (:func:`budgets`), what omgate spent, and what its main app spends alone
(bench/app_path.py).

`make bench BENCH_ARGS='--only peer'` runs these rows alone (bench/run.py); the table is
written between the bench-peer markers of docs/PERFORMANCE.md.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Literal

from run import (
    PAYLOAD_1,
    ROOT,
    Server,
    _pinned,
    batch_message,
    load,
    measured_on,
    omgate,
    open_connections_memory,
    write_between,
)
from stacks import SERVER_CORE, omgate_behind_nginx, peer_stack

START, END = "<!-- bench-peer:start -->", "<!-- bench-peer:end -->"
ROUNDS = 2
# An unmeasured round of a load row's load for each server first: a server's first seconds
# under a load it has not carried yet (its heap, its caches, SQLite's WAL growing) cost
# omgate 5-10% more CPU a message than the rounds after, in three runs of row (a).
WARM_UP_SECONDS = 3.0
IDLE_CONNECTIONS = 500
APP_ALONE_MESSAGES = 3000  # a round of omgate's app alone, 1 notification a message
GROWTH_TARGET = 1.10  # omgate's resident memory, second round of 500 against the first
PEER_PACKAGES = ("gunicorn", "uvicorn", "uvicorn-worker", "uvloop", "httptools", "starlette",
                 "lxml")

Bound = Literal["at least", "at most"]
Measurement = dict  # one load's or one memory round's figures (bench/run.py's load())
# measures one server; the round's number makes the notification IDs of each load new
Measure = Callable[[Server, int], Measurement]


@dataclass(frozen=True)
class Figure:
    name: str
    key: str  # in a Measurement
    target: float | None  # of omgate / peer; None: printed, not judged
    bound: Bound = "at least"

    def holds(self, ratio: float) -> bool:
        if self.target is None:
            raise ValueError(f"{self.name} has no target")
        return ratio >= self.target if self.bound == "at least" else ratio <= self.target

    def target_text(self) -> str:
        if self.target is None:
            return ""
        return f"{'≥' if self.bound == 'at least' else '≤'} {self.target}"


@dataclass(frozen=True)
class AppAlone:
    """What omgate's main app is measured alone with for a row (bench/app_path.py): in one
    process, without sockets, HTTP or TLS, as many requests as ``requests`` a round."""

    identity: Literal["tls", "forwarded"]
    notifications: int
    requests: int


@dataclass(frozen=True)
class Row:
    label: str
    load_average: float  # 1-minute, at the row's start
    rounds: tuple[tuple[Measurement, Measurement], ...]  # (omgate, peer) per round
    figures: tuple[Figure, ...]
    app_alone: AppAlone | None = None  # what the budget line compares with, if any

    @property
    def key(self) -> str:
        """``(a)``, ``(b)``...: the row's name in the issue."""
        return self.label.split(")")[0] + ")"

    def ratios(self, figure: Figure) -> list[float]:
        return [ratio(ours[figure.key], peer[figure.key]) for ours, peer in self.rounds]


def ratio(ours: float, peer: float) -> float:
    return ours / peer if peer else float("inf")


def interleaved(label: str, ours: Server, peer: Server, measure: Measure,
                figures: tuple[Figure, ...], warm_up: Measure | None = None,
                app_alone: AppAlone | None = None) -> Row:
    """``measure`` on omgate, the peer, omgate, the peer (after ``warm_up`` on each, not
    counted)."""
    load_average = os.getloadavg()[0]
    print(f"== {label} (load average {load_average:.2f})", flush=True)
    if warm_up is not None:
        warm_up(ours, ROUNDS)
        warm_up(peer, ROUNDS)
    rounds = []
    for number in range(ROUNDS):
        rounds.append((measure(ours, number), measure(peer, number)))
    return Row(label, load_average, tuple(rounds), figures, app_alone)


def loading(folder: Path, seconds: float, row_id: str, mode: str, concurrency: int,
            body: Path) -> Measure:
    """bench/loadgen.py's load; its notification IDs say the row and the round."""
    def measure(server: Server, number: int) -> Measurement:
        return load(folder, server, mode, concurrency, seconds, body, unique=True,
                    run_id=f"{row_id}{number}")

    return measure


def idle_memory(folder: Path) -> Measure:
    def measure(server: Server, _number: int) -> Measurement:
        memory = open_connections_memory(folder, server, IDLE_CONNECTIONS)
        return {"rss_mib": memory.with_mib, "pss_mib": memory.with_pss_mib,
                "before_mib": memory.before_mib, "errors": 0}

    return measure


def app_alone_ms(app_alone: AppAlone) -> float:
    """The CPU of a message in omgate's main app alone, in ms: the least of three rounds
    (bench/app_path.py, on the servers' core, after the rows: nothing else runs)."""
    command = [sys.executable, str(ROOT / "bench" / "app_path.py"),
               "--identity", app_alone.identity,
               "--notifications", str(app_alone.notifications),
               "--requests", str(app_alone.requests), "--rounds", "3", "--json"]
    print(f"== omgate's app alone: {app_alone.identity}, {app_alone.notifications} "
          "notification(s) a message", flush=True)
    output = subprocess.run(_pinned(command, SERVER_CORE), capture_output=True, text=True,
                            check=True, timeout=600).stdout
    return float(min(json.loads(output.splitlines()[-1])["cpu_us"])) / 1000


MESSAGES = Figure("messages/s", "rate", 1.3)
CPU_PER_MESSAGE = Figure("CPU ms per message", "cpu_per_1000", 0.8, "at most")
RESIDENT = Figure(f"RSS MiB, {IDLE_CONNECTIONS} open", "rss_mib", 1.0, "at most")


def run_rows(folder: Path, seconds: float, write: bool) -> list[Row]:
    keep_alive = loading(folder, seconds, "a", "keep-alive", 32, PAYLOAD_1)
    batch = batch_message(folder)

    def warm_up(row_id: str, mode: str, concurrency: int, body: Path) -> Measure:
        return loading(folder, WARM_UP_SECONDS, row_id, mode, concurrency, body)

    rows = []
    with ExitStack() as servers:
        ours = servers.enter_context(omgate(folder, f"sqlite:///{folder}/peer-rows.db"))
        peer = servers.enter_context(peer_stack(folder, "peer-load"))
        behind = servers.enter_context(
            omgate_behind_nginx(folder, f"sqlite:///{folder}/behind-nginx.db"))
        rows.append(interleaved(
            "(a) keep-alive, 1 notification/message, 32 connections, durable", ours, peer,
            keep_alive, (MESSAGES, CPU_PER_MESSAGE), warm_up("a", "keep-alive", 32, PAYLOAD_1),
            AppAlone("tls", 1, APP_ALONE_MESSAGES)))
        rows.append(interleaved(
            "(e) omgate behind the peer's nginx, row (a)'s load", behind, peer,
            loading(folder, seconds, "e", "keep-alive", 32, PAYLOAD_1),
            (MESSAGES, Figure("CPU ms per message", "cpu_per_1000", None, "at most")),
            warm_up("e", "keep-alive", 32, PAYLOAD_1),
            AppAlone("forwarded", 1, APP_ALONE_MESSAGES)))
        rows.append(interleaved(
            "(b) keep-alive, 100 notifications/message, 32 connections, durable", ours, peer,
            loading(folder, seconds, "b", "keep-alive", 32, batch),
            (Figure("notifications/s", "notifications_per_second", 1.3),),
            warm_up("b", "keep-alive", 32, batch),
            AppAlone("tls", 100, APP_ALONE_MESSAGES // 5)))
        rows.append(interleaved(
            "(c) new TLS connection + client certificate per message, 16 connections", ours,
            peer, loading(folder, seconds, "c", "new-connection", 16, PAYLOAD_1),
            (Figure("connections/s", "rate", 1.0),),
            warm_up("c", "new-connection", 16, PAYLOAD_1)))
    with (omgate(folder, f"sqlite:///{folder}/peer-memory.db") as ours,
          peer_stack(folder, "peer-memory") as peer):
        rows.append(interleaved(
            f"(d) {IDLE_CONNECTIONS} idle TLS connections with a client certificate, twice "
            "on the same servers", ours, peer, idle_memory(folder),
            (RESIDENT, Figure(f"PSS MiB, {IDLE_CONNECTIONS} open", "pss_mib", None))))
    floors = {row.key: app_alone_ms(row.app_alone) for row in rows if row.app_alone}
    table, verdicts = render(rows), judge(rows) + budgets(rows, floors)
    print(table)
    print("\n".join(verdicts))
    if write:
        write_between(START, END, f"{measured_on()} {setup()}\n\n{table}\n\n"
                      + "\n".join(f"- {line}" for line in verdicts))
    return rows


def setup() -> str:
    versions = ", ".join(f"{name} {metadata.version(name)}" for name in PEER_PACKAGES)
    return (f"The peer: nginx (mutual TLS) → unix socket → gunicorn, one uvicorn worker "
            f"({versions}); every server process on core 0, the load on core 1; "
            f"rounds interleaved omgate / peer / omgate / peer.")


def _value(measurement: Measurement, key: str) -> str:
    value = measurement[key]
    return f"{value:,.3f}" if value < 10 else f"{value:,.1f}"


def _latency(measurement: Measurement) -> str:
    if "p99_ms" not in measurement:
        return ""
    return f"{measurement['p50_ms']} / {measurement['p99_ms']}"


def render(rows: list[Row]) -> str:
    lines = ["| row | load avg at start | figure | round | omgate | peer | omgate / peer | "
             "target | verdict | p50 / p99 ms, omgate | p50 / p99 ms, peer |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        for figure in row.figures:
            for number, ((ours, peer), value) in enumerate(
                    zip(row.rounds, row.ratios(figure), strict=True), start=1):
                verdict = "" if figure.target is None else (
                    "met" if figure.holds(value) else "not met")
                lines.append("| " + " | ".join([
                    row.label, f"{row.load_average:.2f}", figure.name, str(number),
                    _value(ours, figure.key), _value(peer, figure.key), f"{value:.2f}",
                    figure.target_text(), verdict, _latency(ours), _latency(peer)]) + " |")
    return "\n".join(lines)


def judge(rows: list[Row]) -> list[str]:
    """A line per target: met only when both rounds meet it; the growth of memory."""
    lines = []
    for row in rows:
        for figure in row.figures:
            if figure.target is None:
                continue
            ratios = row.ratios(figure)
            met = all(figure.holds(value) for value in ratios)
            lines.append(f"{'met' if met else 'not met'}: {row.label.split(')')[0]}) "
                         f"{figure.name}, omgate / peer "
                         f"{', '.join(f'{value:.2f}' for value in ratios)} (target "
                         f"{figure.target_text()}; load average {row.load_average:.2f})")
        errors = sum(part.get("errors", 0) for pair in row.rounds for part in pair)
        if errors:
            lines.append(f"{row.label.split(')')[0]}) {errors} requests without an Ack "
                         "(errors) across the rounds")
    memory = next(row for row in rows if RESIDENT in row.figures)
    (ours_first, peer_first), (ours_second, peer_second) = memory.rounds[:2]
    growth = ratio(ours_second["rss_mib"], ours_first["rss_mib"])
    peer_growth = ratio(peer_second["rss_mib"], peer_first["rss_mib"])
    lines.append(f"{'met' if growth <= GROWTH_TARGET else 'not met'}: (d) omgate's RSS with "
                 f"{IDLE_CONNECTIONS} connections open, second round against the first: "
                 f"{ours_first['rss_mib']} → {ours_second['rss_mib']} MiB, {growth:.2f} x "
                 f"(target ≤ {GROWTH_TARGET}); the peer's {peer_first['rss_mib']} → "
                 f"{peer_second['rss_mib']} MiB, {peer_growth:.2f} x")
    return lines


def _mean(row: Row, side: int, key: str) -> float | None:
    values = [pair[side].get(key) for pair in row.rounds]
    return None if None in values else statistics.fmean(values)  # type: ignore[arg-type]


def budgets(rows: list[Row], floors: dict[str, float]) -> list[str]:
    """A line per row with a rate target: the CPU a message that target leaves omgate.

    Every server process runs on core 0 and, under these loads, keeps it busy: a server's
    rate is then one second of the core divided by its CPU a message, and 1.3 x the peer's
    rate leaves all of omgate's processes at most the peer's CPU a message / 1.3 (with
    nginx in front, row (e): less what nginx spends). Beside it: what omgate spent, and
    what its main app spends alone (bench/app_path.py: no sockets, HTTP or TLS).
    """
    lines = []
    for row in rows:
        rate = next((figure for figure in row.figures
                     if figure.target is not None and figure.bound == "at least"
                     and figure.key in ("rate", "notifications_per_second")), None)
        if rate is None or row.key not in floors:
            continue
        figures = [_mean(row, side, key) for side in (0, 1)
                   for key in ("cpu_per_1000", "server_cpu_percent")]
        if rate.target is None or any(figure is None for figure in figures):
            continue
        ours_cpu, ours_busy, peer_cpu, busy = (float(figure or 0.0) for figure in figures)
        allowed = peer_cpu / rate.target
        front = _mean(row, 0, "front_cpu_per_1000")
        left = allowed - (front or 0.0)
        in_front = (f"; nginx in front of omgate spent {front:.3f} of it, which leaves "
                    f"omgate {left:.3f}" if front is not None else "")
        lines.append(
            f"{row.key} what {rate.target} x the peer's {rate.name} leaves: {allowed:.3f} ms "
            f"of CPU a message for every server process (the peer's {peer_cpu:.3f} / "
            f"{rate.target}; its processes kept core 0 {busy:.0f}% busy, omgate's "
            f"{ours_busy:.0f}%){in_front}. omgate "
            f"spent {ours_cpu - (front or 0.0):.3f}; its main app alone (one process, no "
            f"sockets, HTTP or TLS) {floors[row.key]:.3f}"
            + (": more than the target leaves" if floors[row.key] > left else ""))
    return lines
