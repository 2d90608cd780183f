"""Start real omgate processes for tests, and talk to them over real sockets."""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from lxml import etree

ROOT = Path(__file__).resolve().parent.parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "external"
PAYLOADS = FIXTURES / "payloads"
WSDLS = FIXTURES / "wsdl"
SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
OUTBOUND_NS = "http://soap.sforce.com/2005/09/outbound"
SOAP_HEADERS = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'}
# The SessionId in aspnet-contacts-2.xml: it must never appear in a log line.
CONTACTS_SESSION_ID = (
    "00D1I000003qqqE!AQsAQOjGFnFJzGPA12yhUGL9Aii0N6lADjH2bNUBHRer5QjjTq3_RbIzlAqHBkfjp3vl"
    "HhlwByFY9MJQJlgz_7YaGJZzRF3t"
)


def logged_events(log: Path) -> list[dict[str, Any]]:
    """Every complete JSON line a server has logged to ``log``: a line it is still writing
    (a long one reaches the file in pieces) has no line end yet and is read next time."""
    complete, _newline, _partial = log.read_text().rpartition("\n")
    return [json.loads(line) for line in complete.splitlines() if line.startswith("{")]


def require(condition: bool, message: str) -> None:
    """Skip when something the test needs is missing, unless OMGATE_REQUIRE_ALL=1."""
    if condition:
        return
    if os.environ.get("OMGATE_REQUIRE_ALL") == "1":
        pytest.fail(message + " (OMGATE_REQUIRE_ALL=1)")
    pytest.skip(message)


def require_executable(name: str) -> str:
    """The path of a program the test needs (see ``require``)."""
    path = shutil.which(name)
    require(path is not None, f"{name} is not installed")
    return str(path)


# Ports a test's server listens on come from below the kernel's ephemeral range: a port
# the kernel handed out for a bind to port 0 was free only until it was closed, and any
# client's outgoing connection (a test's, PostgreSQL's, curl's) could take it as its own
# local port before the server bound it ("address already in use", seen in CI). Ports
# below the range are never handed out that way; each is handed out once per test run.
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_TEST_PORTS = 10_000


def _test_ports() -> Iterator[int]:
    try:
        lowest_ephemeral = int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        lowest_ephemeral = 32768
    first = max(1024, lowest_ephemeral - _TEST_PORTS)
    count = lowest_ephemeral - first
    start = random.randrange(count)  # two runs at once start apart
    for step in range(count):
        yield first + (start + step) % count


_ports = _test_ports()


def free_port() -> int:
    """A port of 127.0.0.1 nobody uses now and no other call of this run has returned."""
    for port in _ports:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port left below the ephemeral range")


def can_listen(port: int) -> bool:
    """Whether a server could listen on ``port`` of 127.0.0.1 now (with SO_REUSEADDR, as
    servers bind: connections of an earlier run waiting in TIME_WAIT do not count)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value))
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(value)


def to_toml(document: dict[str, Any]) -> str:
    """Enough TOML for test configs: tables of scalars and lists, arrays of tables, and
    sub-tables of those (``[endpoints.client_auth]``)."""
    lines: list[str] = []
    for section, table in document.items():
        tables = table if isinstance(table, list) else [table]
        for entry in tables:
            lines.append(f"[[{section}]]" if isinstance(table, list) else f"[{section}]")
            lines += [f"{key} = {_toml_value(value)}" for key, value in entry.items()
                      if not isinstance(value, dict)]
            for key, value in entry.items():
                if isinstance(value, dict):
                    lines.append(f"[{section}.{key}]")
                    lines += [f"{name} = {_toml_value(item)}" for name, item in value.items()]
            lines.append("")
    return "\n".join(lines)


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


@dataclass
class RunningServer:
    process: subprocess.Popen[bytes]
    config_path: Path
    log_path: Path
    ca_path: Path
    https_port: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"https://localhost:{self.https_port}"

    def client(self, cert: Any = None, **kwargs: Any) -> httpx.Client:
        """An HTTPS client; ``cert`` is a ClientCase whose chain and key it presents."""
        context = ssl_context(self.ca_path)
        if cert is not None:
            context.load_cert_chain(cert.chain, cert.key)
        return httpx.Client(base_url=self.url, verify=context, timeout=20, **kwargs)

    def post(self, body: bytes, path: str = "/salesforce/outbound",
             headers: dict[str, str] | None = None, cert: Any = None) -> httpx.Response:
        with self.client(cert) as client:
            return client.post(path, content=body, headers=headers or SOAP_HEADERS)

    def wait_for(self, name: str, predicate: Any = None, timeout: float = 5) -> dict[str, Any]:
        """The first logged event ``name`` matching ``predicate`` (waits for it to appear)."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events(name):
                if predicate is None or predicate(event):
                    return event
            if time.monotonic() > deadline:
                raise AssertionError(f"no {name} event matched in {self.log_path}")
            time.sleep(0.05)

    def peer_of(self, correlation_id: str) -> str:
        """The client address of the request that got ``correlation_id``."""
        for name in ("om.accepted", "om.rejected"):
            for event in self.events(name):
                if event.get("correlation_id") == correlation_id:
                    return str(event["peer"])
        raise AssertionError(f"no om.* event with correlation id {correlation_id}")

    def decision_for(self, peer: str) -> dict[str, Any]:
        return self.wait_for("client_auth.decision", lambda event: event.get("peer") == peer)

    def logs(self) -> list[dict[str, Any]]:
        return logged_events(self.log_path)

    def events(self, name: str) -> list[dict[str, Any]]:
        return [event for event in self.logs() if event.get("event") == name]

    def stop(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        """SIGKILL omgate and every process it started (its workers)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)


def ssl_context(ca_path: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_path))


def omgate_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "service", *args]


def run_omgate(*args: str, env: dict[str, str] | None = None, timeout: float = 60,
               umask: int = -1) -> subprocess.CompletedProcess[str]:
    """``umask``: the command's (-1: this process's)."""
    return subprocess.run(omgate_command(*args), capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **(env or {})}, timeout=timeout, check=False,
                          umask=umask)


def wait_ready(server: RunningServer, timeout: float = 30) -> None:
    """Poll /healthz on the health listener (or the TLS one, when there is none)."""
    deadline = time.monotonic() + timeout
    context = ssl_context(server.ca_path)
    health_port = server.extra.get("health_port")
    url = f"http://127.0.0.1:{health_port}" if health_port else server.url
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(
                f"omgate exited with {server.process.returncode}:\n{server.log_path.read_text()}"
            )
        try:
            response = httpx.get(f"{url}/healthz", verify=context, timeout=2)
            if response.status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    server.kill()
    raise AssertionError(f"omgate did not become ready:\n{server.log_path.read_text()}")


def start_server(config_path: Path, log_path: Path, ca_path: Path, https_port: int,
                 env: dict[str, str] | None = None, wait: bool = True,
                 health_port: int | None = None, umask: int = -1,
                 serve_args: tuple[str, ...] = ()) -> RunningServer:
    log_handle = log_path.open("ab")
    process = subprocess.Popen(
        omgate_command("serve", "--config", str(config_path), *serve_args),
        cwd=ROOT, stdout=log_handle, stderr=subprocess.STDOUT,
        env={**os.environ, "OMGATE_LOGGING__FORMAT": "json", **(env or {})},
        start_new_session=True,  # a process group, so kill() reaches the workers too
        umask=umask,  # -1: this process's
    )
    log_handle.close()
    server = RunningServer(process, config_path, log_path, ca_path, https_port,
                           {"health_port": health_port})
    if wait:
        wait_ready(server)
    return server


def is_ack(response: httpx.Response) -> bool:
    if response.status_code != 200:
        return False
    assert response.headers["content-type"] == "text/xml; charset=utf-8"
    document = etree.fromstring(response.content)
    response_element = f"{{{OUTBOUND_NS}}}notificationsResponse"
    ack = document.find(f"{{{SOAP_NS}}}Body/{response_element}/{{{OUTBOUND_NS}}}Ack")
    return ack is not None and ack.text == "true"


def fault_of(response: httpx.Response) -> tuple[str, str, str]:
    """(faultcode, faultstring, correlation id) of a SOAP 1.1 fault response."""
    assert response.headers["content-type"] == "text/xml; charset=utf-8"
    document = etree.fromstring(response.content)
    fault = document.find(f"{{{SOAP_NS}}}Body/{{{SOAP_NS}}}Fault")
    assert fault is not None, response.text
    correlation = fault.find("detail/{urn:omgate}correlationId").text
    assert response.headers["x-correlation-id"] == correlation
    return fault.findtext("faultcode"), fault.findtext("faultstring"), correlation


def break_writes(database: Path, table: str, message: str, operation: str = "UPDATE") -> None:
    """Make every ``operation`` on ``table`` fail, as a full or failing disk would."""
    connection = sqlite3.connect(database)
    connection.execute(f"CREATE TRIGGER fail_{table} BEFORE {operation} ON {table} "
                       f"BEGIN SELECT RAISE(ABORT, '{message}'); END")
    connection.commit()
    connection.close()


def mend_writes(database: Path, table: str) -> None:
    connection = sqlite3.connect(database)
    connection.execute(f"DROP TRIGGER fail_{table}")
    connection.commit()
    connection.close()
