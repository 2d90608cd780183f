"""The stacks `make bench` compares omgate with, started and stopped by the project.

- ``peer_stack``: nginx terminating mutual TLS (``ssl_verify_client on``, the bench's CA and
  depth) in front of gunicorn with one uvicorn worker (uvloop, httptools) on a unix socket,
  serving bench/peer_app.py: what a Python team would otherwise deploy (issue 23).
- ``omgate_behind_nginx``: the same nginx forwarding the client certificate to omgate's
  plain listener, as a load balancer that terminates TLS does.

Every process runs pinned to core 0 (bench/run.py pins the load on core 1), in a folder of
its own under the bench's temporary folder, on free ports of 127.0.0.1; gunicorn runs in a
process group of its own, stopped as a whole.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from run import ROOT, Server, _pinned, nginx, omgate

SERVER_CORE = 0
UPSTREAM_KEEPALIVE = 64  # idle upstream connections each nginx worker keeps
# nginx hands the app its verdict on the client certificate and the certificate itself
# (URL-encoded PEM, the leaf), on a kept-alive HTTP/1.1 upstream connection.
PROXY_LOCATION = """
        location / {
            # bodies up to 1 MiB stay in memory (nginx's default writes those over 16 KiB
            # to a file): the peer as an operator would tune it
            client_body_buffer_size 1m;
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-SSL-Client-Verify $ssl_client_verify;
            proxy_set_header X-SSL-Client-Cert $ssl_client_escaped_cert;
        }"""


def upstream(address: str) -> str:
    return (f"    upstream app {{\n        server {address};\n"
            f"        keepalive {UPSTREAM_KEEPALIVE};\n        keepalive_requests 1000000;\n"
            "        keepalive_timeout 120s;\n    }")


def _wait_unix_socket(path: Path, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"gunicorn exited:\n{log.read_text()}")
        with socket.socket(socket.AF_UNIX) as probe:
            if probe.connect_ex(str(path)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"gunicorn did not start:\n{log.read_text()}")


def _stop_group(process: subprocess.Popen) -> None:
    """SIGTERM to the process group ``process`` leads, SIGKILL if it outlives 30 s."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)


@contextmanager
def gunicorn_peer(run: Path) -> Iterator[subprocess.Popen]:
    """gunicorn, one uvicorn worker, serving bench/peer_app.py on ``run``/app.sock; the
    inbox is ``run``/peer.db, the log (one line a message) ``run``/app.log."""
    sock, log = run / "app.sock", run / "app.log"
    command = [sys.executable, "-m", "gunicorn", "--workers", "1",
               "--worker-class", "uvicorn_worker.UvicornWorker", "--bind", f"unix:{sock}",
               "--pythonpath", str(ROOT / "bench"), "--keep-alive", "120",
               "--graceful-timeout", "5", "--no-control-socket", "--error-logfile", "-",
               "peer_app:app"]
    environment = {**os.environ, "PEER_DB": str(run / "peer.db")}
    with log.open("wb") as output:
        process = subprocess.Popen(_pinned(command, SERVER_CORE), cwd=run, env=environment,
                                   stdout=output, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        _wait_unix_socket(sock, process, log)
        yield process
    finally:
        _stop_group(process)


@contextmanager
def peer_stack(folder: Path, name: str = "peer") -> Iterator[Server]:
    """The peer: nginx (mutual TLS) → unix socket → gunicorn + one uvicorn worker; its
    files (socket, inbox, log) in ``folder``/``name``, a new folder."""
    run = folder / name
    run.mkdir()
    with (gunicorn_peer(run) as app,
          nginx(folder, PROXY_LOCATION, upstream(f"unix:{run / 'app.sock'}")) as front):
        yield Server("peer", front.port, front.process, also=(app,))


def peer_database(folder: Path, name: str = "peer") -> Path:
    """The SQLite inbox of the peer stack started in ``folder`` as ``name``."""
    return folder / name / "peer.db"


@contextmanager
def omgate_behind_nginx(folder: Path, inbox_url: str) -> Iterator[Server]:
    """omgate's plain listener behind the peer's nginx, which forwards the leaf."""
    with (omgate(folder, inbox_url, behind_proxy=True) as plain,
          nginx(folder, PROXY_LOCATION, upstream(f"127.0.0.1:{plain.port}")) as front):
        yield Server("omgate behind nginx", front.port, front.process, also=(plain.process,))

