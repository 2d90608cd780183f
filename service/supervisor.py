"""``omgate serve`` with ``server.workers`` processes sharing the listening ports.

The supervisor binds every listening socket once (``service/sockets.py``), without
SO_REUSEPORT, so a port that another process (another omgate, say) listens on stops
``omgate serve`` at start instead of being shared with it. It checks the configuration
and migrates the inbox once, then forks the workers: they inherit the sockets, each runs
its own event loop, and all write one inbox. It passes SIGTERM, SIGINT and SIGHUP on,
restarts a worker that dies (on the same sockets; after a growing delay when it keeps
dying at start), and gives up when one cannot even start the first time. A worker whose
supervisor dies drains and stops (Linux). It logs through structlog, as the workers do.
Prometheus metrics from all workers are summed through a shared folder (prometheus_client's
multiprocess mode).
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import resource
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING

from service.backoff import capped_doubling
from service.config import Config, ConfigError
from service.cpus import usable_cpus
from service.exitcodes import EXIT_INTERRUPTED, EXIT_OK, EXIT_PROBLEMS
from service.inbox.model import InboxError
from service.logs import get_logger
from service.multiprocess import METRICS_FOLDER_VARIABLE
from service.sockets import Listeners, bind_listeners

if TYPE_CHECKING:
    from service.server import Prepared

log = get_logger("omgate")
STARTUP_GRACE_SECONDS = 3.0  # a worker that dies sooner "died at start"
RESTART_BACKOFF_FIRST = 1.0  # seconds before restarting a worker that died at start...
RESTART_BACKOFF_MAX = 60.0  # ...doubling each time it does so again, up to this
REAP_INTERVAL_SECONDS = 0.1
# what the supervisor passes on to its workers
FORWARDED_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP})


def raise_open_files_limit() -> None:
    """Use every file descriptor the hard limit allows: each connection needs one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def worker_count(config: Config) -> int:
    """server.workers, or (0) one per CPU the process may use."""
    if config.server.workers:
        return config.server.workers
    counted = usable_cpus()
    log.info("server.workers_counted", workers=counted.cpus, bound=counted.bound,
             cgroup_quota_cpus=counted.quota)
    return counted.cpus


def event_loop_factory(config: Config) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """server.event_loop: uvloop where it is installed ("auto"), or asyncio's own (None)."""
    choice = config.server.event_loop
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise config.error("server", "event_loop", "uvloop is not installed (pip install "
                               "uvloop), or choose \"auto\" or \"asyncio\"") from None
        return None
    return uvloop.new_event_loop


def run_worker(config: Config, index: int, listeners: Listeners,
               prepared: Prepared | None = None) -> int:
    from service.server import serve

    with asyncio.Runner(loop_factory=event_loop_factory(config)) as runner:
        return runner.run(serve(config, listeners, worker_index=index, prepared=prepared))


def _migrate_once(config: Config) -> None:
    """Create or migrate the inbox once, before the workers share it."""
    from service.server import open_inbox_of

    async def migrate() -> None:
        inbox = await open_inbox_of(config)
        await inbox.close()

    asyncio.run(migrate())


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _end_with(supervisor: int) -> None:
    """SIGTERM this worker when the supervisor dies (killed with SIGKILL, say), so no
    orphan keeps serving the port without anyone to restart or stop it. Linux only: the
    standard library has no binding for prctl, hence ctypes."""
    if not sys.platform.startswith("linux"):
        return
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)  # valid: cannot fail
    if os.getppid() != supervisor:  # it died before the request was made
        os.kill(os.getpid(), signal.SIGTERM)


def _fork_worker(config: Config, index: int, listeners: Listeners) -> int:
    supervisor = os.getpid()
    pid = os.fork()
    if pid == 0:  # the worker
        for signum in FORWARDED_SIGNALS:
            signal.signal(signum, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED_SIGNALS)  # blocked by _start
        _end_with(supervisor)
        code = EXIT_PROBLEMS
        try:
            code = run_worker(config, index, listeners)
        except (ConfigError, InboxError) as error:  # a restart reads the files as they are now
            print(f"omgate: worker {index} cannot start: {error}", file=sys.stderr)
        except BaseException:  # noqa: BLE001 - said, then the exit code tells the supervisor
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return pid


def serve_processes(config: Config, *, create_inbox_folder: bool = False) -> int:
    """Every configuration refusal (ConfigError) comes first, before a socket is opened: a
    port another process holds must not hide what is wrong with the configuration. Raises
    ListenError when a listener cannot be bound."""
    count = worker_count(config)
    event_loop_factory(config)  # a loop that is not installed is refused before anything
    folder = tempfile.mkdtemp(prefix="omgate-metrics-") if count > 1 else None
    if folder is not None:  # before prometheus_client is imported anywhere (service.server)
        os.environ[METRICS_FOLDER_VARIABLE] = folder
    try:
        from service.server import log_inbox_location, prepare, ready_inbox_folder

        created = ready_inbox_folder(config, create=create_inbox_folder)
        prepared = prepare(config)
        log_inbox_location(config, created)
        raise_open_files_limit()
        listeners = bind_listeners(config)
        try:
            if count == 1:
                return run_worker(config, 0, listeners, prepared)
            _migrate_once(config)
            return _supervise(config, count, listeners)
        finally:
            listeners.close()
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


@dataclass
class WorkerSlot:
    """One worker index: its process, and how often it has died soon after starting."""

    index: int
    pid: int | None = None
    starts: int = 0
    started_at: float = 0.0
    quick_deaths: int = 0  # in a row
    restart_at: float | None = None  # a restart waiting out its backoff

    def backoff(self) -> float:
        return capped_doubling(RESTART_BACKOFF_FIRST, self.quick_deaths, RESTART_BACKOFF_MAX)


def _how_it_ended(code: int) -> dict[str, object]:
    if code < 0:
        return {"signal": signal.Signals(-code).name}
    return {"exit_code": code}


class Supervisor:
    """Forks the workers, passes signals on, restarts a worker that dies: at once after a
    worker that ran a while, after a growing delay when it keeps dying soon after starting
    (not in a tight loop), and not at all when it cannot start the first time."""

    def __init__(self, config: Config, count: int, listeners: Listeners) -> None:
        self.config, self.listeners = config, listeners
        self.slots = [WorkerSlot(index) for index in range(count)]
        self.stopping = False
        self.result = EXIT_OK

    def run(self) -> int:
        for signum in FORWARDED_SIGNALS:
            signal.signal(signum, self._forward)
        for slot in self.slots:
            if not self.stopping:
                self._start(slot)
        log.info("supervisor.started",  # a stop may have come before every worker started
                 workers=sum(slot.pid is not None for slot in self.slots))
        while True:
            live = [slot for slot in self.slots if slot.pid is not None]
            due = [slot.restart_at for slot in self.slots
                   if slot.restart_at is not None and not self.stopping]
            if not live and not due:
                return self.result
            if not due:
                self._reaped(*os.wait())  # blocks until a worker ends (signals still run)
                continue
            for slot in self.slots:
                if slot.restart_at is not None and time.monotonic() >= slot.restart_at:
                    self._start(slot)
            pid, status = os.waitpid(-1, os.WNOHANG) if live else (0, 0)
            if pid:
                self._reaped(pid, status)
            else:
                time.sleep(REAP_INTERVAL_SECONDS)

    def stop(self, result: int | None = None) -> None:
        # The workers keep their copies of the listeners until they have drained; once they
        # close them, new connections are refused rather than left in a backlog nobody reads.
        if not self.stopping:
            self.stopping = True
            self.listeners.close()
        if result is not None:
            self.result = result

    def _forward(self, signum: int, _frame: FrameType | None) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            self.stop(EXIT_INTERRUPTED if signum == signal.SIGINT else None)
        for slot in self.slots:
            if slot.pid is not None:
                os.kill(slot.pid, signum)

    def _start(self, slot: WorkerSlot) -> None:
        # A signal handled between fork() and the pid written down would be passed on to
        # every worker but the new one, which would then serve on, and omgate never exit:
        # the forwarded signals wait (blocked) until the pid is known.
        held = signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED_SIGNALS)
        try:
            if self.stopping:
                return
            slot.pid = _fork_worker(self.config, slot.index, self.listeners)
            slot.starts += 1
            slot.started_at, slot.restart_at = time.monotonic(), None
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)

    def _reaped(self, pid: int, status: int) -> None:
        for slot in self.slots:
            if slot.pid == pid:
                self._exited(slot, os.waitstatus_to_exitcode(status))

    def _exited(self, slot: WorkerSlot, code: int) -> None:
        ran = time.monotonic() - slot.started_at
        slot.pid = None
        if self.stopping:
            return
        fields = {"worker": slot.index, "ran_seconds": round(ran, 3), **_how_it_ended(code)}
        died_at_start = ran < STARTUP_GRACE_SECONDS
        if code > 0 and died_at_start and slot.starts == 1:
            # it exited on its own right away, the first time: it cannot start at all
            log.error("supervisor.worker_cannot_start", **fields, detail="stopping omgate")
            self.stop(code)
            for other in self.slots:
                if other.pid is not None:
                    os.kill(other.pid, signal.SIGTERM)
            return
        slot.quick_deaths = slot.quick_deaths + 1 if died_at_start else 0
        delay = slot.backoff() if slot.quick_deaths else 0.0
        log.warning("supervisor.worker_exited", **fields, restart_in_seconds=delay)
        slot.restart_at = time.monotonic() + delay


def _supervise(config: Config, count: int, listeners: Listeners) -> int:
    return Supervisor(config, count, listeners).run()
