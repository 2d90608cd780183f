"""`make soak`: does omgate give back what closed connections held?

Starts ``omgate serve`` (one worker, logging at warning, a temporary config, inbox and the
development PKI of the tests' own tooling) and, in rounds mode (the default), runs rounds:
open ``--connections`` TLS connections (each completes its handshake and sends nothing),
hold them 2 s, close them all, wait 3 s, and read what all omgate processes hold: resident
memory (RSS, and PSS from /proc/PID/smaps_rollup), open descriptors (/proc/PID/fd), the
descriptors on the SQLite inbox's files and, with ``--inbox postgres``, the sessions on the
inbox's database. Growth fails the run (exit status 1): resident memory after a round more
than 10% over round 2's (rounds count from 0), or descriptors after a round above those
before round 0 plus a slack of 4.

    python bench/soak.py --rounds 10 --connections 500 --mode require --tls 1.3
    python bench/soak.py --clients none          # clients that present no certificate
    python bench/soak.py --refused               # refused chains and no certificate, mixed
    python bench/soak.py --minutes 30            # `make soak`: mixed load, one line a minute

``--minutes M`` runs mixed load instead: each minute keep-alive messages, a new connection
per message, idle connections held open, and refused chains and clients without a
certificate; the memory and descriptors one idle moment later are printed. It fails when
the last minute's resident memory is more than 10% over minute 2's (the first minutes
warm caches up), or its descriptors are above minute 2's plus the slack.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import ssl
import string
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, get_args

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
for _path in (BENCH, ROOT / "tests" / "support", ROOT):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from client_pki import ClientPki, build_client_pki  # noqa: E402
from harness import RunningServer, free_port, start_server, to_toml  # noqa: E402
from run import PAYLOAD_1, Server, load  # noqa: E402

from service.tools.pki import write_dev_pki  # noqa: E402

Mode = Literal["request", "require"]
TlsVersion = Literal["1.2", "1.3"]
# What a client presents: a chain the policy accepts, chains it refuses (an untrusted
# issuer, an expired leaf: in request mode they are captured, not refused), or nothing.
Presenting = Literal["valid", "refused", "none"]
Clients = Literal["valid", "refused", "none", "mixed"]
InboxKind = Literal["sqlite", "postgres"]
RejectWith = Literal["http", "handshake"]  # [client_auth] reject_with

GROWTH = 0.10  # resident memory may be this much over the reference, no more
REFERENCE_ROUND = 2  # rounds 0 and 1 warm caches and the allocator's arenas up
REFERENCE_MINUTE = 2
DESCRIPTOR_SLACK = 4  # descriptors a quiet server may open by itself (a log, a timer's)
# What SQLite keeps open per process that opened the inbox: the database, -wal, -shm and
# the writers' lock file.
SQLITE_FILES = 4
POOL_SIZE = 4  # [inbox] pool_size with --inbox postgres: the sessions may never exceed it
HANDSHAKES_AT_ONCE = 48  # client handshakes under way at once (the server's backlog)
KEEPALIVE_CONNECTIONS = 32
TLS_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
MIXES: dict[Clients, tuple[Presenting, ...]] = {
    "valid": ("valid",), "refused": ("refused",), "none": ("none",),
    "mixed": ("refused", "none"),
}


@dataclass(frozen=True)
class Pki:
    """The development files (server.pem, ca.pem, client-chain.pem... in ``folder``) and the
    tests' client chains; both client roots are trusted."""

    folder: Path
    clients: ClientPki

    @property
    def trust(self) -> list[Path]:
        return [self.folder / "client-ca.pem", self.clients.root_file]


def make_pki(folder: Path) -> Pki:
    write_dev_pki(folder)
    return Pki(folder, build_client_pki(folder / "clients"))


def client_contexts(pki: Pki, presenting: Presenting, tls: TlsVersion) -> list[ssl.SSLContext]:
    """Contexts for one kind of client; connections take them in turn."""
    chains = {"valid": [pki.clients.cases["valid"]], "none": [],
              "refused": [pki.clients.cases["untrusted"], pki.clients.cases["expired"]]}
    contexts = []
    for case in chains[presenting] or [None]:
        context = ssl.create_default_context(cafile=str(pki.folder / "ca.pem"))
        context.minimum_version = context.maximum_version = TLS_VERSIONS[tls]
        if case is not None:
            context.load_cert_chain(case.chain, case.key)
        contexts.append(context)
    return contexts


@dataclass(frozen=True)
class Sample:
    """What all omgate processes hold at one moment (KiB, and counts)."""

    rss_kib: int
    pss_kib: int
    descriptors: int
    inbox_descriptors: int  # on the SQLite inbox's files
    database_sessions: int | None  # PostgreSQL: sessions on the inbox's database

    def describe(self) -> str:
        database = ("" if self.database_sessions is None
                    else f", {self.database_sessions} database sessions")
        return (f"RSS {self.rss_kib / 1024:6.1f} MiB, PSS {self.pss_kib / 1024:6.1f} MiB, "
                f"{self.descriptors} descriptors ({self.inbox_descriptors} on the inbox"
                f"{database})")


def _status_kib(pid: int, path: str, key: str) -> int:
    for line in Path(f"/proc/{pid}/{path}").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _descriptor_targets(pid: int) -> list[str]:
    targets = []
    for entry in os.scandir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):  # closed while listed
            targets.append(os.readlink(entry.path))
    return targets


def process_group(leader: int) -> list[int]:
    """The processes of ``leader``'s group: omgate's supervisor and workers (harness starts
    omgate in a session of its own)."""
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == leader:  # the process group
                members.append(int(entry.name))
    return sorted(members)


@dataclass
class SoakServer:
    running: RunningServer
    pki: Pki
    inbox: Path | None  # the SQLite inbox
    database: str | None  # the PostgreSQL inbox's URL
    loads: Iterator[str]  # two-character run ids: every load message is a new notification

    @property
    def port(self) -> int:
        return self.running.https_port

    def sample(self) -> Sample:
        rss = pss = descriptors = on_inbox = 0
        for pid in process_group(self.running.process.pid):
            with contextlib.suppress(OSError):  # a process that ended meanwhile
                rss += _status_kib(pid, "status", "VmRSS")
                pss += _status_kib(pid, "smaps_rollup", "Pss")
                targets = _descriptor_targets(pid)
                descriptors += len(targets)
                if self.inbox is not None:
                    on_inbox += sum(target.startswith(str(self.inbox)) for target in targets)
        return Sample(rss, pss, descriptors, on_inbox, self.database_sessions())

    def database_sessions(self) -> int | None:
        if self.database is None:
            return None
        import psycopg

        name = self.database.rsplit("/", 1)[1]
        with psycopg.connect(self.database.rsplit("/", 1)[0] + "/postgres") as connection:
            row = connection.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s",
                                     (name,)).fetchone()
        return int(row[0]) if row else 0

    def keepalive_load(self, seconds: float, mode: str = "keep-alive",
                       connections: int = KEEPALIVE_CONNECTIONS) -> dict[str, float]:
        """bench/loadgen.py's messages for ``seconds`` (its answers counted)."""
        return load(self.pki.folder, Server("omgate", self.port, self.running.process), mode,
                    connections, seconds, PAYLOAD_1, unique=True, run_id=next(self.loads),
                    silent_close=mode == "new-connection")


def _run_ids() -> Iterator[str]:
    alphabet = string.digits + string.ascii_uppercase
    return ("".join(pair) for pair in itertools.cycle(itertools.product(alphabet, repeat=2)))


@contextlib.contextmanager
def soak_server(pki: Pki, folder: Path, mode: Mode, inbox: InboxKind = "sqlite",
                reject_with: RejectWith = "http", log: Path | None = None
                ) -> Iterator[SoakServer]:
    """``omgate serve`` with one worker, logging at warning (to ``log``, else in
    ``folder``), on free loopback ports."""
    folder.mkdir(parents=True, exist_ok=True)
    with _inbox_url(folder, inbox) as url:
        port, health = free_port(), free_port()
        config = {
            "server": {"bind": [f"127.0.0.1:{port}"], "health_bind": f"127.0.0.1:{health}",
                       "certfile": pki.folder / "server.pem",
                       "keyfile": pki.folder / "server.key", "workers": 1,
                       # every client of this harness comes from 127.0.0.1
                       "max_connections_per_peer": 4096, "shutdown_timeout": 5},
            "client_auth": {"mode": mode, "trust": pki.trust, "reject_with": reject_with},
            "inbox": {"url": url, "pool_size": POOL_SIZE},
            "logging": {"level": "warning"},
        }
        config_path = folder / "omgate.toml"
        config_path.write_text(to_toml(config))
        running = start_server(config_path, log or folder / "omgate.log",
                               pki.folder / "ca.pem", port, health_port=health)
        sqlite = Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite") else None
        try:
            yield SoakServer(running, pki, sqlite, None if sqlite else url, _run_ids())
        finally:
            try:
                running.stop(timeout=20)
            except Exception:  # noqa: BLE001 - whatever stopping did, nothing may stay
                running.kill()


@contextlib.contextmanager
def _inbox_url(folder: Path, inbox: InboxKind) -> Iterator[str]:
    if inbox == "sqlite":
        yield f"sqlite:///{folder / 'inbox.db'}"
        return
    from postgres_server import start_postgres

    postgres = start_postgres()
    try:
        yield postgres.new_database()
    finally:
        postgres.stop()


# -- connections that complete their handshake and send nothing ----------------------------

@dataclass(frozen=True)
class Crowd:
    opened: int
    failed: int  # handshakes that failed (a refusal at the handshake counts here)
    holding: Sample  # with the connections open


async def _connect(port: int, context: ssl.SSLContext, gate: asyncio.Semaphore
                   ) -> asyncio.StreamWriter | None:
    async with gate:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(
                "127.0.0.1", port, ssl=context, server_hostname="localhost",
                ssl_handshake_timeout=30), 40)
        except (OSError, ssl.SSLError, TimeoutError):
            return None
        return writer


async def _close_all(writers: Sequence[asyncio.StreamWriter]) -> None:
    """close_notify to each; a server that does not answer it within 5 s gets a reset."""
    for writer in writers:
        writer.close()
    waits = [writer.wait_closed() for writer in writers]
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*waits, return_exceptions=True), 5)
    for writer in writers:
        writer.transport.abort()


async def _crowd(server: SoakServer, contexts: Sequence[ssl.SSLContext], count: int,
                 hold: float) -> Crowd:
    gate = asyncio.Semaphore(HANDSHAKES_AT_ONCE)
    connected = await asyncio.gather(*(_connect(server.port, contexts[index % len(contexts)],
                                                gate) for index in range(count)))
    writers = [writer for writer in connected if writer is not None]
    await asyncio.sleep(hold)
    holding = server.sample()
    await _close_all(writers)
    return Crowd(len(writers), count - len(writers), holding)


def open_and_close(server: SoakServer, contexts: Sequence[ssl.SSLContext], count: int,
                   hold: float) -> Crowd:
    """Open ``count`` connections (handshake completed, nothing sent), hold them ``hold``
    seconds, sample, close them all."""
    return asyncio.run(_crowd(server, contexts, count, hold))


# -- rounds -------------------------------------------------------------------------------

@dataclass(frozen=True)
class RoundPlan:
    rounds: int = 10
    connections: int = 500
    tls: TlsVersion = "1.3"
    clients: Clients = "valid"
    hold: float = 2.0
    settle: float = 3.0  # seconds between closing and reading memory
    keepalive_seconds: float = 0.0  # keep-alive messages before each round


@dataclass(frozen=True)
class RoundResult:
    number: int
    opened: int
    failed: int
    holding: Sample
    after: Sample

    def describe(self) -> str:
        return (f"round {self.number:2d}: {self.opened} open ({self.failed} failed) "
                f"{self.holding.rss_kib / 1024:6.1f} MiB; after: {self.after.describe()}")


def run_rounds(server: SoakServer, plan: RoundPlan,
               report: Callable[[str], None] = print) -> tuple[Sample, list[RoundResult]]:
    """The sample before round 0, and each round's."""
    contexts = [context for presenting in MIXES[plan.clients]
                for context in client_contexts(server.pki, presenting, plan.tls)]
    baseline = server.sample()
    report(f"start:    {baseline.describe()}")
    results = []
    for number in range(plan.rounds):
        if plan.keepalive_seconds:
            messages = server.keepalive_load(plan.keepalive_seconds)
            report(f"          keep-alive load: {messages['acks']} messages acknowledged, "
                   f"{messages['errors']} errors")
        crowd = open_and_close(server, contexts, plan.connections, plan.hold)
        time.sleep(plan.settle)
        results.append(RoundResult(number, crowd.opened, crowd.failed, crowd.holding,
                                   server.sample()))
        report(results[-1].describe())
    return baseline, results


def memory_growth(reference: Sample, later: Sequence[tuple[str, Sample]]) -> list[str]:
    """Each later sample whose resident memory is more than GROWTH over ``reference``."""
    ceiling = reference.rss_kib * (1 + GROWTH)
    return [f"{label}: RSS {sample.rss_kib / 1024:.1f} MiB is over {ceiling / 1024:.1f} MiB "
            f"({GROWTH:.0%} over {reference.rss_kib / 1024:.1f} MiB)"
            for label, sample in later if sample.rss_kib > ceiling]


def descriptor_growth(baseline: Sample, later: Sequence[tuple[str, Sample]],
                      processes: int = 1) -> list[str]:
    """Each later sample holding more descriptors than ``baseline`` plus the slack, more on
    the SQLite inbox than SQLite keeps, or more database sessions than the pool's size."""
    problems = []
    for label, sample in later:
        if sample.descriptors > baseline.descriptors + DESCRIPTOR_SLACK:
            problems.append(f"{label}: {sample.descriptors} descriptors open, over "
                            f"{baseline.descriptors} + {DESCRIPTOR_SLACK}")
        if sample.inbox_descriptors > SQLITE_FILES * processes:
            problems.append(f"{label}: {sample.inbox_descriptors} descriptors on the inbox's "
                            f"files, over {SQLITE_FILES} per process")
        if (sample.database_sessions or 0) > POOL_SIZE * processes:
            problems.append(f"{label}: {sample.database_sessions} database sessions, over "
                            f"the pool's {POOL_SIZE} per process")
    return problems


def judge_rounds(baseline: Sample, results: Sequence[RoundResult]) -> list[str]:
    """What grew: memory after a round past round 2's, descriptors past the start's."""
    after = [(f"round {result.number}", result.after) for result in results]
    problems = descriptor_growth(baseline, after)
    if len(results) > REFERENCE_ROUND:
        problems += memory_growth(results[REFERENCE_ROUND].after, after[REFERENCE_ROUND + 1:])
    return problems


# -- mixed load, minute by minute -------------------------------------------------------------

@dataclass(frozen=True)
class MinutePlan:
    """One minute of mixed load, then an idle moment before the sample."""

    keepalive_seconds: float = 10.0
    keepalive_connections: int = 8
    new_connection_seconds: float = 5.0
    new_connection_senders: int = 4
    idle_connections: int = 500
    idle_seconds: float = 10.0
    refused_connections: int = 200
    settle: float = 3.0


def run_minutes(server: SoakServer, minutes: int, plan: MinutePlan, tls: TlsVersion,
                report: Callable[[str], None] = print) -> list[Sample]:
    """Each minute's sample, taken at its end after ``plan.settle`` idle seconds."""
    idle = client_contexts(server.pki, "valid", tls)
    refused = [*client_contexts(server.pki, "refused", tls),
               *client_contexts(server.pki, "none", tls)]
    report(f"start:     {server.sample().describe()}")
    samples = []
    started = time.monotonic()
    for minute in range(1, minutes + 1):
        kept = server.keepalive_load(plan.keepalive_seconds, "keep-alive",
                                     plan.keepalive_connections)
        new = server.keepalive_load(plan.new_connection_seconds, "new-connection",
                                    plan.new_connection_senders)
        idled = open_and_close(server, idle, plan.idle_connections, plan.idle_seconds)
        refusals = open_and_close(server, refused, plan.refused_connections, 0)
        time.sleep(max(plan.settle, started + minute * 60 - time.monotonic()))
        samples.append(server.sample())
        report(f"minute {minute:2d}: {samples[-1].describe()}; {kept['acks']:.0f} keep-alive "
               f"and {new['acks']:.0f} one-connection messages, {idled.opened} idle and "
               f"{refusals.opened} refused or certificate-less connections")
    return samples


def judge_minutes(samples: Sequence[Sample]) -> list[str]:
    """The last minute against minute 2 (or the first, in a shorter run)."""
    reference = samples[min(REFERENCE_MINUTE, len(samples)) - 1]
    last = [(f"minute {len(samples)}", samples[-1])]
    return memory_growth(reference, last) + descriptor_growth(reference, last)


# -- command line -----------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=500, help="opened each round")
    parser.add_argument("--mode", choices=get_args(Mode), default="require",
                        help="[client_auth] mode")
    parser.add_argument("--tls", choices=get_args(TlsVersion), default="1.3",
                        help="the one TLS version the clients offer")
    parser.add_argument("--clients", choices=get_args(Clients), default="valid",
                        help="what the round's clients present (mixed: refused chains and "
                             "no certificate, in turn)")
    parser.add_argument("--refused", action="store_const", const="mixed", dest="clients",
                        help="the same as --clients mixed")
    parser.add_argument("--keepalive-load", type=float, default=0.0, metavar="SECONDS",
                        help=f"{KEEPALIVE_CONNECTIONS} keep-alive connections send messages "
                             "for this long before each round")
    parser.add_argument("--minutes", type=int, default=0,
                        help="mixed load for this many minutes instead of rounds")
    parser.add_argument("--inbox", choices=get_args(InboxKind), default="sqlite",
                        help="postgres: a PostgreSQL server of its own (Debian's packages)")
    parser.add_argument("--reject-with", choices=get_args(RejectWith), default="http",
                        help="[client_auth] reject_with: how require mode refuses a client")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="omgate-soak-") as temp:
        folder = Path(temp)
        pki = make_pki(folder / "pki")
        with soak_server(pki, folder / "server", args.mode, args.inbox,
                         args.reject_with) as server:
            if args.minutes:
                print(f"mixed load for {args.minutes} minutes, {args.mode}, TLS {args.tls}, "
                      f"{args.inbox} inbox")
                problems = judge_minutes(run_minutes(server, args.minutes, MinutePlan(),
                                                     args.tls))
            else:
                plan = replace(RoundPlan(), rounds=args.rounds, connections=args.connections,
                               tls=args.tls, clients=args.clients,
                               keepalive_seconds=args.keepalive_load)
                print(f"{plan.rounds} rounds of {plan.connections} connections ({plan.clients} "
                      f"clients), {args.mode}, TLS {plan.tls}, keep-alive load "
                      f"{plan.keepalive_seconds} s, {args.inbox} inbox, refusals by "
                      f"{args.reject_with}")
                problems = judge_rounds(*run_rounds(server, plan))
    for problem in problems:
        print(f"GROWTH: {problem}")
    print("FAILED: memory or descriptors grew" if problems else "flat: nothing grew")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
