"""``omgate serve`` with ``server.workers`` processes sharing the listening ports.

The supervisor checks the configuration and migrates the inbox once, then forks the
workers; each binds with SO_REUSEPORT and runs its own event loop, and all write one
inbox. It passes SIGTERM, SIGINT and SIGHUP on, restarts a worker that dies, and gives
up when one cannot even start (a port already taken, say). Prometheus metrics from all
workers are summed through a shared folder (prometheus_client's multiprocess mode).
"""

from __future__ import annotations

import asyncio
import os
import resource
import shutil
import signal
import sys
import tempfile
import time
from types import FrameType

from service.config import Config

EXIT_OK, EXIT_PROBLEMS = 0, 1
STARTUP_GRACE_SECONDS = 3.0
METRICS_FOLDER = "PROMETHEUS_MULTIPROC_DIR"


def raise_open_files_limit() -> None:
    """Use every file descriptor the hard limit allows: each connection needs one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def worker_count(config: Config) -> int:
    return config.server.workers or len(os.sched_getaffinity(0)) or 1


def run_worker(config: Config, index: int, reuse_port: bool) -> int:
    from service.server import serve

    try:
        asyncio.run(serve(config, worker_index=index, reuse_port=reuse_port))
    except OSError as error:
        print(f"omgate serve: cannot listen: {error}", file=sys.stderr)
        return EXIT_PROBLEMS
    return EXIT_OK


def _check_once(config: Config) -> None:
    """Fail fast, in one place, on what every worker would fail on; migrate the inbox."""
    from service.server import open_inbox_of, prepare

    prepare(config)

    async def migrate() -> None:
        inbox = await open_inbox_of(config)
        await inbox.close()

    asyncio.run(migrate())


def _fork_worker(config: Config, index: int) -> int:
    pid = os.fork()
    if pid == 0:  # the worker
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)
        code = EXIT_PROBLEMS
        try:
            code = run_worker(config, index, reuse_port=True)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return pid


def serve_processes(config: Config) -> int:
    raise_open_files_limit()
    count = worker_count(config)
    if count == 1:
        return run_worker(config, 0, reuse_port=False)
    folder = tempfile.mkdtemp(prefix="omgate-metrics-")
    os.environ[METRICS_FOLDER] = folder  # before prometheus_client is imported anywhere
    try:
        _check_once(config)
        return _supervise(config, count)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _supervise(config: Config, count: int) -> int:
    children: dict[int, tuple[int, float]] = {}  # pid -> (worker index, started at)
    stopping = False

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        if signum in (signal.SIGTERM, signal.SIGINT):
            stopping = True
        for pid in children:
            os.kill(pid, signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    for index in range(count):
        children[_fork_worker(config, index)] = (index, time.monotonic())
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
            # it exited on its own right away: it could not start (a port taken, say)
            print(f"omgate serve: worker {index} could not start (exit {code}); stopping",
                  file=sys.stderr)
            result = code if code > 0 else EXIT_PROBLEMS
            stopping = True
            for other in children:
                os.kill(other, signal.SIGTERM)
            continue
        print(f"omgate serve: worker {index} exited ({code}); starting it again",
              file=sys.stderr)
        children[_fork_worker(config, index)] = (index, time.monotonic())
    return result
