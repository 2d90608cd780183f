"""Delivery downstream through `omgate serve`: at least once, in each record's order, through
failures (the in-process parts: tests/unit/test_delivery.py)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import select
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from delivery_cases import RECORDS, delivery_config, states_message
from harness import ROOT, SOAP_HEADERS, is_ack, omgate_command, run_omgate
from messages import envelope, notification

from service.delivery import DeliveryFailed
from service.delivery.webhook import Webhook
from service.inbox import StoredNotification
from service.inbox.migrations import SCHEMA_VERSION


def serve_in_thread(handler: type[BaseHTTPRequestHandler],
                    tls: ssl.SSLContext | None = None) -> ThreadingHTTPServer:
    """A loopback HTTP server (HTTPS with ``tls``) on a free port, serving in a thread."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def stop_serving(server: ThreadingHTTPServer | None) -> None:
    if server is not None:
        server.shutdown()
        server.server_close()


@dataclass
class Receiver:
    """A webhook receiver that misbehaves on purpose, then recovers."""

    behaviour: Callable[[int, dict], str]  # (request number, document) -> ok|fail|hang
    accepted: list[dict] = field(default_factory=list)
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                document = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with receiver.lock:
                    receiver.requests += 1
                    number = receiver.requests
                action = receiver.behaviour(number, document)
                if action == "hang":
                    time.sleep(3)  # longer than the attempt timeout
                if action != "ok":
                    self.send_response(500 if action == "fail" else 200)
                    self.end_headers()
                    return
                with receiver.lock:
                    receiver.accepted.append({**document,
                                              "idempotency_key": self.headers["Idempotency-Key"]})
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                pass

        self.server = serve_in_thread(Handler)
        return self

    def stop(self) -> None:
        stop_serving(self.server)


@pytest.fixture
def receiver_factory() -> Iterator[Callable[[Callable[[int, dict], str]], Receiver]]:
    started: list[Receiver] = []

    def make(behaviour: Callable[[int, dict], str]) -> Receiver:
        receiver = Receiver(behaviour).start()
        started.append(receiver)
        return receiver

    yield make
    for receiver in started:
        receiver.stop()


FAST_RETRIES = {"timeout": 1, "retry_base_seconds": 0.1, "retry_max_seconds": 0.5,
                "max_attempts": 50, "concurrency": 4}


def wait_until(predicate: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.1)


def states_of(server, state: str) -> list[dict]:
    return json.loads(run_omgate("inbox", "list", "--config", str(server.config_path),
                                 "--state", state, "--limit", "1000").stdout)


def test_a_flaky_receiver_gets_everything_at_least_once_and_in_order(omgate_server,
                                                                      receiver_factory):
    def flaky(number: int, _document: dict) -> str:
        if number <= 6:
            return "fail"
        if number in (9, 10):
            return "hang"
        return "fail" if number % 3 == 0 else "ok"

    receiver = receiver_factory(flaky)
    server = omgate_server({"delivery": {"webhook_url": receiver.url, **FAST_RETRIES}})
    for version in range(1, 6):
        assert is_ack(server.post(states_message(version)))
    total = len(RECORDS) * 5
    wait_until(lambda: len(states_of(server, "delivered")) == total, timeout=90)
    by_record: dict[str, list[int]] = defaultdict(list)
    for document in receiver.accepted:
        by_record[document["record_id"]].append(int(document["fields"]["Version__c"]))
    assert set(by_record) == set(RECORDS)  # nothing lost
    for record, versions in by_record.items():
        first_seen = list(dict.fromkeys(versions))
        assert first_seen == [1, 2, 3, 4, 5], (record, versions)  # never out of order
    assert receiver.requests > total  # failures and time-outs were retried
    keys = {document["idempotency_key"] for document in receiver.accepted}
    assert len(keys) == total
    failures = [e for e in server.events("delivery.failed")]
    assert any(e["reason"] == "timed out" for e in failures)
    assert any("HTTP 500" in e["reason"] for e in failures)
    metrics = httpx.get(f"http://127.0.0.1:{server.extra['health_port']}/metrics").text
    assert 'omgate_delivery_attempts_total{result="delivered"} 20.0' in metrics


def test_dead_letters_and_retry(omgate_server, receiver_factory):
    healthy = threading.Event()
    receiver = receiver_factory(lambda _n, _d: "ok" if healthy.is_set() else "fail")
    server = omgate_server({"delivery": {"webhook_url": receiver.url, **FAST_RETRIES,
                                         "max_attempts": 2}})
    assert is_ack(server.post(states_message(1)))
    wait_until(lambda: len(states_of(server, "dead")) == len(RECORDS))
    dead = states_of(server, "dead")[0]
    assert dead["attempts"] == 2 and "HTTP 500" in dead["last_error"]
    server.wait_for("delivery.dead_letter")
    healthy.set()
    result = run_omgate("inbox", "retry", "--dead", "--config", str(server.config_path))
    assert result.stdout.startswith(f"{len(RECORDS)} notifications pending delivery again")
    wait_until(lambda: len(states_of(server, "delivered")) == len(RECORDS))
    assert {d["record_id"] for d in receiver.accepted} == set(RECORDS)
    missing = run_omgate("inbox", "retry", "424242", "--config", str(server.config_path))
    assert missing.returncode == 1


HANDLER = '''
import json, os

def handle(document):
    with open(os.environ["OMGATE_TEST_HANDLER_OUT"], "a") as out:
        out.write(json.dumps(document) + "\\n")
'''


def test_a_python_handler_and_omgate_deliver_on_its_own(omgate_server, tmp_path):
    (tmp_path / "downstream_handler.py").write_text(HANDLER)
    out = tmp_path / "handled.jsonl"
    server = omgate_server()  # stores only: no delivery configured
    assert is_ack(server.post(states_message(1)))
    assert len(states_of(server, "pending")) == len(RECORDS)
    env = {"PYTHONPATH": str(tmp_path), "OMGATE_TEST_HANDLER_OUT": str(out),
           "OMGATE_DELIVERY__HANDLER": "downstream_handler:handle"}
    deliver = subprocess.Popen(omgate_command("deliver", "--config", str(server.config_path)),
                               env={**os.environ, **env},
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: len(states_of(server, "delivered")) == len(RECORDS))
    finally:
        deliver.terminate()
        assert deliver.wait(20) == 0
    handled = [json.loads(line) for line in out.read_text().splitlines()]
    assert {d["record_id"] for d in handled} == set(RECORDS)
    assert set(handled[0]) >= {"organization_id", "action_id", "notification_id",
                               "sobject_type", "record_id", "fields", "received_at"}


def test_a_handler_that_cannot_be_loaded_stops_serve_at_start(omgate_server):
    server = omgate_server({"delivery": {"handler": "no_such_module:handle"}}, wait=False)
    assert server.process.wait(30) == 2
    assert "[delivery] handler" in server.log_path.read_text()


def test_two_replicas_on_one_postgresql_store_once_and_ack_every_copy(omgate_server, postgres):
    url = postgres.new_database()
    replicas = [omgate_server({"inbox": {"url": url}}) for _ in range(2)]
    body = envelope(*(notification(f"04lREPLICA{index:05d}AAA") for index in range(5)))
    outcomes: list[bool] = []
    lock = threading.Lock()

    def hammer(replica) -> None:
        with replica.client() as client:
            for _ in range(15):
                response = client.post("/salesforce/outbound", content=body,
                                       headers=SOAP_HEADERS)
                with lock:
                    outcomes.append(is_ack(response))

    threads = [threading.Thread(target=hammer, args=(replica,)) for replica in replicas
               for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(outcomes) == 90 and all(outcomes)
    stored = json.loads(run_omgate("inbox", "list", "--config",
                                   str(replicas[0].config_path)).stdout)
    assert sorted(item["notification_id"] for item in stored) == sorted(
        f"04lREPLICA{index:05d}AAA" for index in range(5))
    accepted = [e for replica in replicas for e in replica.events("om.accepted")]
    assert sum(e["new"] for e in accepted) == 5
    assert sum(e["duplicates"] for e in accepted) == 90 * 5 - 5
    assert len({e["peer"] for e in accepted}) > 1


def test_inbox_migrate_command(tmp_path, postgres):
    config = tmp_path / "omgate.toml"
    config.write_text(f'[inbox]\nurl = "{postgres.new_database()}"\n')
    result = run_omgate("inbox", "migrate", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"inbox schema at version {SCHEMA_VERSION}"


def test_a_webhook_attempt_that_times_out_closes_its_connection():
    """Nothing of a timed-out attempt may reach the receiver after a later one."""
    async def scenario() -> tuple[bytes, float]:
        seen: asyncio.Queue[tuple[bytes, float]] = asyncio.Queue()

        async def never_answers(reader: asyncio.StreamReader,
                                writer: asyncio.StreamWriter) -> None:
            request = await reader.readuntil(b"\r\n\r\n")
            await reader.read()  # the body, then EOF when the client gives up
            await seen.put((request, time.monotonic()))
            writer.close()

        server = await asyncio.start_server(never_answers, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        inbox_item = one_notification()
        deliver = Webhook(f"http://127.0.0.1:{port}/hook?x=1")
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(deliver(inbox_item, 1), 0.3)
        request, closed_at = await asyncio.wait_for(seen.get(), 5)
        await deliver.aclose()
        server.close()
        return request, closed_at - started

    request, closed_after = asyncio.run(scenario())
    assert request.startswith(b"POST /hook?x=1 HTTP/1.1\r\n")
    assert b"Idempotency-Key: 00D000000000001:04l000000000001" in request
    assert closed_after < 2  # closed when the attempt gave up, not left running


def one_notification() -> StoredNotification:
    return StoredNotification(1, "/salesforce/outbound", "00D000000000001AAA",
                              "04k000000000001AAA", "04l000000000001AAA", "Account", RECORDS[0],
                              {}, "2026-11-26T00:00:00+00:00", None, None, None)


@pytest.mark.parametrize(("answer", "failure"), [
    (b"HTTP/1.1 204 No Content\r\n\r\n", None),
    (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
     b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", None),
    (b"HTTP/1.0 202\r\n\r\n", None),
    (b"HTTP/1.1 503 Busy\r\nContent-Length: 4\r\n\r\nbusy", "HTTP 503: b'busy'"),
    (b"HTTP/1.1 2000 OK\r\n\r\n", "RemoteProtocolError: illegal status line"),
    (b"SSH-2.0-OpenSSH_9.2\r\n", "RemoteProtocolError: Server disconnected"),
    (b"", "RemoteProtocolError: Server disconnected without sending a response"),
])
def test_webhook_reads_the_final_answer(answer, failure):
    async def scenario() -> None:
        async def answering(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(answer)
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(answering, "127.0.0.1", 0)
        deliver = Webhook(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hook")
        try:
            await asyncio.wait_for(deliver(one_notification(), 1), 10)
        finally:
            await deliver.aclose()
            server.close()

    if failure is None:
        asyncio.run(scenario())
    else:
        with pytest.raises(DeliveryFailed, match=re.escape(failure)):
            asyncio.run(scenario())


@dataclass
class Landed:
    """One request a downstream server took: what it saw, and on which connection."""

    connection: tuple[str, int]  # omgate's address and port: one per TCP connection
    headers: dict[str, str]
    document: dict
    client_subject: str | None  # the client certificate's subject CN, over TLS


@dataclass
class Downstream:
    """An HTTP/1.1 keep-alive receiver (over TLS when given a context) that takes a request
    only if omgate is still connected after ``hold(document, attempt)`` seconds, as a
    server that stops work for a client that went away does."""

    tls: ssl.SSLContext | None = None
    hold: Callable[[dict, int], float] = lambda _document, _attempt: 0.0
    landed: list[Landed] = field(default_factory=list)
    abandoned: list[Landed] = field(default_factory=list)  # what omgate gave up on
    server: ThreadingHTTPServer | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.server_address[1]

    def start(self) -> Downstream:
        downstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                document = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                peer = self.connection.getpeercert() if downstream.tls else None
                subject = dict(item[0] for item in peer["subject"])["commonName"] if peer \
                    else None
                request = Landed(self.client_address, dict(self.headers), document, subject)
                attempt = int(self.headers["X-Omgate-Attempt"])
                if not self._still_connected_after(downstream.hold(document, attempt)):
                    downstream.abandoned.append(request)
                    self.close_connection = True
                    return
                downstream.landed.append(request)
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _still_connected_after(self, seconds: float) -> bool:
                deadline = time.monotonic() + seconds
                while time.monotonic() < deadline:
                    readable, _, _ = select.select([self.connection], [], [], 0.05)
                    if readable and self.connection.recv(1, socket.MSG_PEEK) == b"":
                        return False
                return True

            def log_message(self, *_args: object) -> None:
                pass

        self.server = serve_in_thread(Handler, self.tls)
        return self

    def stop(self) -> None:
        stop_serving(self.server)


@pytest.fixture
def downstream() -> Iterator[Callable[..., Downstream]]:
    started: list[Downstream] = []

    def make(**settings: object) -> Downstream:
        server = Downstream(**settings).start()  # type: ignore[arg-type]
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


RECORD = "001A0000000000XAAA"

TOKEN = "tok-8f2d4c1e9b7a"  # noqa: S105 - a test value


def record_states(*versions: int) -> bytes:
    """Notifications of one record, oldest first: omgate delivers them one after another."""
    return envelope(*(notification(f"04lSTATE{version:07d}AAA",
                                   f"<sf:Version__c>{version}</sf:Version__c>",
                                   record_id=RECORD) for version in versions))


def test_the_webhook_reuses_its_connection_and_sends_headers_from_the_environment(
        omgate_server, downstream):
    receiver = downstream()
    server = omgate_server(
        {"delivery": {"webhook_url": f"http://127.0.0.1:{receiver.port}/hook",
                      "webhook_headers": {"Authorization": "Bearer ${ENV:OMGATE_TEST_TOKEN}"},
                      **FAST_RETRIES}},
        env={"OMGATE_TEST_TOKEN": TOKEN})
    assert is_ack(server.post(record_states(1, 2)))
    wait_until(lambda: len(receiver.landed) == 2, timeout=30)
    first, second = receiver.landed
    assert first.connection == second.connection  # one TCP connection for both
    assert [item.document["fields"]["Version__c"] for item in receiver.landed] == ["1", "2"]
    assert {item.headers["Authorization"] for item in receiver.landed} == {f"Bearer {TOKEN}"}
    assert [item.headers["Idempotency-Key"] for item in receiver.landed] == [
        "00Dxx0000001gPF:04lSTATE0000001", "00Dxx0000001gPF:04lSTATE0000002"]
    server.wait_for("delivery.delivered", lambda e: e["notification_id"] == "04lSTATE0000002AAA")
    assert TOKEN not in server.log_path.read_text()


def test_a_header_from_a_missing_environment_variable_stops_serve_at_start(omgate_server):
    server = omgate_server(
        {"delivery": {"webhook_url": "http://127.0.0.1:9/hook",
                      "webhook_headers": {"Authorization": "Bearer ${ENV:OMGATE_TEST_UNSET}"}}},
        wait=False)
    assert server.process.wait(30) == 2
    assert ("[delivery] webhook_headers Authorization: environment variable OMGATE_TEST_UNSET "
            "is not set") in server.log_path.read_text()


def test_a_private_ca_downstream_that_requires_a_client_certificate_and_a_password(
        omgate_server, downstream, dev_pki):
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=dev_pki / "client-ca.pem")
    tls.load_cert_chain(dev_pki / "server.pem", dev_pki / "server.key")
    tls.verify_mode = ssl.CERT_REQUIRED
    receiver = downstream(tls=tls)
    url = f"https://omgate:p%40ss-w0rd@localhost:{receiver.port}/hook"
    server = omgate_server({"delivery": {
        "webhook_url": url, "webhook_ca": dev_pki / "ca.pem",
        "webhook_client_cert": dev_pki / "client-chain.pem",
        "webhook_client_key": dev_pki / "client.key", **FAST_RETRIES}})
    assert is_ack(server.post(record_states(1)))
    wait_until(lambda: len(receiver.landed) == 1, timeout=30)
    [landed] = receiver.landed
    assert landed.client_subject == "omgate development client (Salesforce-like)"
    assert landed.headers["Authorization"] == "Basic " + base64.b64encode(
        b"omgate:p@ss-w0rd").decode()
    started = server.wait_for("delivery.started")
    assert started["webhook_url"] == f"https://omgate:***@localhost:{receiver.port}/hook"
    log = server.log_path.read_text()
    assert "p@ss-w0rd" not in log and "p%40ss-w0rd" not in log


def test_a_timed_out_attempt_never_lands_after_its_retry(omgate_server, downstream):
    """The first attempt outlasts delivery.timeout; had omgate left its connection open,
    the receiver would take it after the retry (and after the record's next state)."""
    def hold(document: dict, attempt: int) -> float:
        return 4.0 if (document["fields"]["Version__c"], attempt) == ("1", 1) else 0.0

    receiver = downstream(hold=hold)
    server = omgate_server({"delivery": {"webhook_url": f"http://127.0.0.1:{receiver.port}/h",
                                         **FAST_RETRIES, "timeout": 1}})
    assert is_ack(server.post(record_states(1, 2)))
    # three requests: the held first attempt (taken or given up within 4 s), its retry, and
    # the record's next state
    wait_until(lambda: len(receiver.landed) + len(receiver.abandoned) == 3, timeout=30)
    landed = [(item.document["fields"]["Version__c"], item.headers["X-Omgate-Attempt"])
              for item in receiver.landed]
    assert landed == [("1", "2"), ("2", "1")]
    assert receiver.abandoned[0].headers["X-Omgate-Attempt"] == "1"
    assert server.wait_for("delivery.failed")["reason"] == "timed out"


def test_a_server_without_a_webhook_does_not_load_httpx():
    """httpx costs every worker about 3 MiB of resident memory (with 500 idle connections,
    make bench's peer row is within a few MiB of the peer stack): only a webhook loads it."""
    webhook_settings = {**vars(delivery_config()), "handler": "",
                        "webhook_url": "http://127.0.0.1:9/"}
    probe = ("import sys; import service.cli, service.server; "
             "from service.delivery import delivery_target; "
             "from service.config import DeliveryConfig; "
             "before = 'httpx' in sys.modules; "
             f"delivery_target(DeliveryConfig(**{webhook_settings!r})); "
             "print(before, 'httpx' in sys.modules)")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            check=True, cwd=ROOT).stdout.split()
    assert loaded == ["False", "True"]
