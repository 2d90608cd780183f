"""`omgate probe` and `omgate send` count as an acknowledgement only what Salesforce does."""

from __future__ import annotations

import http.server
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from harness import run_omgate


def dev_pki(folder: Path) -> Path:
    result = run_omgate("pki", "dev", "--out", str(folder))
    assert result.returncode == 0, result.stderr
    return folder


@contextmanager
def https_server(pki: Path, body: bytes) -> Iterator[int]:
    """A TLS server on 127.0.0.1 (an OS-chosen port) answering every POST with ``body``
    and HTTP 200, with the development server certificate."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.send_response(200)
            self.send_header("Content-Type", "text/xml; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki / "server.pem", pki / "server.key")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


BARE_ACK = b"<Ack>true</Ack>"  # what a hand-written receiver answers: no SOAP envelope


def test_send_does_not_count_an_answer_without_a_soap_envelope_as_an_ack(tmp_path):
    """Salesforce parses the answer as a SOAP envelope holding notificationsResponse in
    http://soap.sforce.com/2005/09/outbound; a 200 whose body merely contains the text
    <Ack>true</Ack> is no acknowledgement, and Salesforce retries the message for 24 hours."""
    pki = dev_pki(tmp_path / "pki")
    with https_server(pki, BARE_ACK) as port:
        result = run_omgate("send", f"https://localhost:{port}/salesforce/outbound",
                            "--generate", "Account", "--ca", str(pki / "ca.pem"), timeout=120)
    assert "#1 ack" not in result.stdout, result.stdout
    assert result.returncode == 1, result.stdout


def test_probe_post_does_not_say_ok_for_an_answer_without_a_soap_envelope(tmp_path):
    pki = dev_pki(tmp_path / "pki")
    with https_server(pki, BARE_ACK) as port:
        result = run_omgate("probe", f"https://localhost:{port}/salesforce/outbound",
                            "--ca", str(pki / "ca.pem"), "--post", timeout=120)
    assert ": acknowledged" not in result.stdout, result.stdout
    assert result.returncode == 1, result.stdout
