"""Third-party servers (nginx, HAProxy) a test starts in front of omgate, and the client
that posts to the deployments behind them."""

from __future__ import annotations

import socket
import ssl
import subprocess
import time
from pathlib import Path

import httpx
from harness import PAYLOADS, SOAP_HEADERS, ssl_context

BODY = (PAYLOADS / "amplabs-create_account.xml").read_bytes()


def wait_port(port: int, process: subprocess.Popen, log: Path, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"exited {process.returncode}: {log.read_text()}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}: {log.read_text()}")


class Daemons:
    """Third-party servers a test starts, each stopped at the end."""

    def __init__(self) -> None:
        self.processes: list[subprocess.Popen] = []

    def start(self, command: list[str], port: int, log: Path,
              env: dict[str, str] | None = None) -> int:
        log.touch()
        process = subprocess.Popen(command, env=env, stdout=log.open("ab"),
                                   stderr=subprocess.STDOUT)
        self.processes.append(process)
        wait_port(port, process, log)
        return port

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
            process.wait(10)


def client_context(server_ca: Path, case=None, leaf_only: bool = False) -> ssl.SSLContext:
    context = ssl_context(server_ca)
    if case is not None:
        context.load_cert_chain(case.leaf if leaf_only else case.chain, case.key)
    return context


def post(url: str, context: ssl.SSLContext, headers: dict | None = None) -> httpx.Response:
    return httpx.post(url, content=BODY, headers={**SOAP_HEADERS, **(headers or {})},
                      verify=context, timeout=20)
