"""``omgate serve`` with ``server.workers`` processes sharing the listening ports.

The supervisor binds every listening socket once, without SO_REUSEPORT, so a port that
another process (another omgate, say) listens on stops ``omgate serve`` at start instead
of being shared with it. It checks the configuration and migrates the inbox once, then
forks the workers: they inherit the sockets, each runs its own event loop, and all write
one inbox. It passes SIGTERM, SIGINT and SIGHUP on, restarts a worker that dies (on the
same sockets), and gives up when one cannot even start. Prometheus metrics from all
workers are summed through a shared folder (prometheus_client's multiprocess mode).
"""

from __future__ import annotations

import asyncio
import os
import resource
import shutil
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from types import FrameType

from service.config import BindAddress, Config

EXIT_OK, EXIT_PROBLEMS = 0, 1
STARTUP_GRACE_SECONDS = 3.0
METRICS_FOLDER = "PROMETHEUS_MULTIPROC_DIR"
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


def raise_open_files_limit() -> None:
    """Use every file descriptor the hard limit allows: each connection needs one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def worker_count(config: Config) -> int:
    return config.server.workers or len(os.sched_getaffinity(0)) or 1


def run_worker(config: Config, index: int, listeners: Listeners) -> int:
    from service.server import serve

    asyncio.run(serve(config, listeners, worker_index=index))
    return EXIT_OK


def _check_once(config: Config) -> None:
    """Fail fast, in one place, on what every worker would fail on; migrate the inbox."""
    from service.server import open_inbox_of, prepare

    prepare(config)

    async def migrate() -> None:
        inbox = await open_inbox_of(config)
        await inbox.close()

    asyncio.run(migrate())


def _fork_worker(config: Config, index: int, listeners: Listeners) -> int:
    pid = os.fork()
    if pid == 0:  # the worker
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)
        code = EXIT_PROBLEMS
        try:
            code = run_worker(config, index, listeners)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return pid


def serve_processes(config: Config) -> int:
    """Raises ListenError when a listener cannot be bound."""
    raise_open_files_limit()
    count = worker_count(config)
    listeners = bind_listeners(config)
    try:
        if count == 1:
            return run_worker(config, 0, listeners)
        return _serve_workers(config, count, listeners)
    finally:
        listeners.close()


def _serve_workers(config: Config, count: int, listeners: Listeners) -> int:
    folder = tempfile.mkdtemp(prefix="omgate-metrics-")
    os.environ[METRICS_FOLDER] = folder  # before prometheus_client is imported anywhere
    try:
        _check_once(config)
        return _supervise(config, count, listeners)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _supervise(config: Config, count: int, listeners: Listeners) -> int:
    children: dict[int, tuple[int, float]] = {}  # pid -> (worker index, started at)
    stopping = False

    def stop_listening() -> None:
        # The workers keep their copies until they have drained; once they close them,
        # new connections are refused rather than left waiting in a backlog nobody reads.
        nonlocal stopping
        stopping = True
        listeners.close()

    def forward(signum: int, _frame: FrameType | None) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            stop_listening()
        for pid in children:
            os.kill(pid, signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    for index in range(count):
        if stopping:
            break
        children[_fork_worker(config, index, listeners)] = (index, time.monotonic())
    result = EXIT_OK
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        index, started = children.pop(pid)
        code = os.waitstatus_to_exitcode(status)
        if stopping:
            continue
        if code > 0 and time.monotonic() - started < STARTUP_GRACE_SECONDS:
            # it exited on its own right away: it could not start (an unreachable inbox, say)
            print(f"omgate serve: worker {index} could not start (exit {code}); stopping",
                  file=sys.stderr)
            result = code if code > 0 else EXIT_PROBLEMS
            stop_listening()
            for other in children:
                os.kill(other, signal.SIGTERM)
            continue
        print(f"omgate serve: worker {index} exited ({code}); starting it again",
              file=sys.stderr)
        children[_fork_worker(config, index, listeners)] = (index, time.monotonic())
    return result
