"""omgate behind real nginx and HAProxy, and with hand-built Envoy and ALB headers.

Each test runs an example deployment from config/examples/ with only addresses and
file paths changed.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from behind_proxy import BODY, Daemons, client_context, post, wait_port
from checkout import IGNORED as CHECKOUT_IGNORED
from client_pki import ClientCase
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from envoy_xfcc import envoy_xfcc, self_signed_with_dns_name, url_pem
from harness import (
    ROOT,
    SOAP_HEADERS,
    can_listen,
    fault_of,
    free_port,
    is_ack,
    logged_events,
    merge,
    require,
    require_executable,
    run_omgate,
)
from messages import envelope, notification
from readme import readme_block

EXAMPLES = ROOT / "config" / "examples"


def example(name: str) -> dict:
    """An example's configuration, less its inbox: each test keeps its own."""
    config = tomllib.loads((EXAMPLES / name / "omgate.toml").read_text())
    config.pop("inbox", None)
    return config


def fill(template: str, values: dict[str, str]) -> str:
    """envsubst for ${NAME} only, leaving nginx's own $variables alone."""
    return re.sub(r"\$\{([A-Z_]+)\}", lambda m: values[m.group(1)], template)


def codes_and_messages(decision: dict) -> list[tuple[str, str]]:
    return [(f["code"], f["message"]) for f in decision["findings"]]


# -- nginx terminating mTLS, forwarding $ssl_client_escaped_cert ----------------------------

@pytest.fixture
def nginx(tmp_path, dev_pki):
    binary = require_executable("nginx")
    daemons = Daemons()

    def start(omgate_plain: str) -> int:
        port = free_port()
        run_dir = tmp_path / "nginx"
        run_dir.mkdir(exist_ok=True)
        config = run_dir / "nginx.conf"
        config.write_text(fill((EXAMPLES / "nginx" / "nginx.conf.template").read_text(), {
            "NGINX_RUN_DIR": str(run_dir), "NGINX_LISTEN": f"127.0.0.1:{port}",
            "PUBLIC_NAME": "localhost", "SERVER_CERT": str(dev_pki / "server.pem"),
            "SERVER_KEY": str(dev_pki / "server.key"), "OMGATE_PLAIN": omgate_plain,
        }))
        log = run_dir / "error.log"
        return daemons.start([binary, "-c", str(config), "-p", str(run_dir), "-e", str(log),
                              "-g", "daemon off;"], port, log)

    yield start
    daemons.stop()


def intermediate_file(client_pki) -> Path:
    intermediate = client_pki.root_file.parent / "client-intermediate.pem"
    intermediate.write_bytes(client_pki.intermediate.pem())
    return intermediate


def behind_nginx(omgate_server, nginx, client_pki, mode: str | None = None):
    """The nginx example's omgate (mode changed if given) behind the example's nginx."""
    plain = f"127.0.0.1:{free_port()}"
    client_auth = {"trust": [client_pki.root_file, intermediate_file(client_pki)]}
    server = omgate_server(merge(example("nginx"), {
        "server": {"plain_bind": [plain], "health_bind": f"127.0.0.1:{free_port()}"},
        "client_auth": {**client_auth, **({"mode": mode} if mode else {})},
    }))
    return server, f"https://localhost:{nginx(plain)}/salesforce/outbound"


def test_nginx_hands_the_certificates_it_refuses_to_omgate(omgate_server, nginx, client_pki,
                                                           dev_pki):
    """nginx itself refuses an expired certificate (its "400 The SSL certificate error"
    page) and passes an untrusted one; the example hands both to omgate, whose answer and
    log say why."""
    server, url = behind_nginx(omgate_server, nginx, client_pki)
    for label, code in (("expired", "expired"), ("untrusted", "missing_intermediate")):
        case = client_pki.cases[label]
        refused = post(url, client_context(dev_pki / "ca.pem", case))
        assert refused.status_code == 403, (label, refused.text)
        fault_of(refused)  # omgate's SOAP fault, not nginx's HTML page
        subject = x509.load_pem_x509_certificate(case.leaf.read_bytes()).subject
        decision = server.wait_for("client_auth.decision", lambda e, s=subject: e.get(
            "chain") and e["chain"][0]["subject"] == s.rfc4514_string())
        assert decision["outcome"] == "reject" and decision["source"] == "forwarded"
        assert [f["code"] for f in decision["findings"]] == [code]


def test_no_certificate_through_nginx_says_what_nginx_must_do(omgate_server, nginx, client_pki,
                                                              dev_pki):
    """forwarded_cert is set: the hint is about the proxy, not about that setting."""
    server, url = behind_nginx(omgate_server, nginx, client_pki)
    assert post(url, client_context(dev_pki / "ca.pem")).status_code == 403
    decision = server.wait_for("client_auth.decision", lambda e: e["outcome"] == "reject")
    [finding] = decision["findings"]
    assert finding["code"] == "no_client_cert"
    assert "'pem-header:X-SSL-Client-Cert'" in finding["message"]
    assert "ssl_verify_client optional_no_ca;" in finding["hint"]
    assert "proxy_set_header X-SSL-Client-Cert $ssl_client_escaped_cert;" in finding["hint"]
    assert "forwarded_cert" not in finding["hint"]


def test_nginx_forwards_the_certificate_and_omgate_decides(omgate_server, nginx, client_pki,
                                                           dev_pki):
    server, url = behind_nginx(omgate_server, nginx, client_pki)
    intermediate = intermediate_file(client_pki)
    valid = client_pki.cases["valid"]
    assert is_ack(post(url, client_context(dev_pki / "ca.pem", valid)))
    accepted = server.wait_for("client_auth.decision", lambda e: e["outcome"] == "accept")
    assert accepted["source"] == "forwarded"
    assert accepted["chain"][0]["subject"] == "CN=valid.client.test,O=Salesforce-like test"

    untrusted = client_pki.cases["untrusted"]
    refused = post(url, client_context(dev_pki / "ca.pem", untrusted))
    assert refused.status_code == 403
    via_nginx = server.wait_for("client_auth.decision", lambda e: e["outcome"] == "reject")

    # The same certificate presented straight to omgate's own TLS front door.
    direct = omgate_server({"client_auth": {"mode": "require",
                                            "trust": [client_pki.root_file, intermediate]}})
    leaf_only = ClientCase("untrusted leaf", untrusted.leaf, untrusted.leaf, untrusted.key, None)
    assert direct.post(BODY, cert=leaf_only).status_code == 403  # what nginx forwards
    straight = direct.wait_for("client_auth.decision", lambda e: e["outcome"] == "reject")
    assert codes_and_messages(via_nginx) == codes_and_messages(straight)
    assert straight["source"] == "tls"

    assert post(url, client_context(dev_pki / "ca.pem")).status_code == 403
    server.wait_for("client_auth.decision",
                    lambda e: [f["code"] for f in e["findings"]] == ["no_client_cert"])


def omgate_on_path(folder: Path) -> dict[str, str]:
    """An environment whose `omgate` is this checkout's, as `make venv` would make it."""
    folder.mkdir()
    (folder / "omgate").write_text(f'#!/bin/sh\nexec {sys.executable} -m service "$@"\n')
    (folder / "omgate").chmod(0o755)
    return {**os.environ, "PATH": f"{folder}:{os.environ['PATH']}"}


class Walkthrough:
    """A README section run as written, block by block, in a copy of the repository with
    `omgate` on the PATH; its omgate's log lines are kept."""

    def __init__(self, tmp_path: Path, ports: tuple[int, ...]) -> None:
        for port in ports:
            require(can_listen(port), f"port {port} is taken; the README's walkthrough uses it")
        self.checkout = tmp_path / "omgate"
        shutil.copytree(ROOT, self.checkout, ignore=CHECKOUT_IGNORED)
        self.env = omgate_on_path(tmp_path / "bin")
        self.log = tmp_path / "serve.log"

    def run(self, marker: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", "-c", readme_block(marker)], cwd=self.checkout,
                              env=self.env, capture_output=True, text=True, timeout=120,
                              check=False)

    @contextlib.contextmanager
    def serving(self, marker: str, health_port: int, daemon_pid_file: str):
        """omgate as the block ``marker`` starts it, until the end; then the daemon the
        walkthrough started, if its stop block did not stop it."""
        with self.log.open("wb") as log:
            serve = subprocess.Popen(["bash", "-c", "exec " + readme_block(marker)],
                                     cwd=self.checkout, env=self.env, stdout=log,
                                     stderr=subprocess.STDOUT)
            try:
                wait_port(health_port, serve, self.log)
                yield
            finally:
                serve.terminate()
                serve.wait(30)
                pid_file = self.checkout / daemon_pid_file
                if pid_file.exists():
                    with contextlib.suppress(ProcessLookupError, ValueError):
                        os.kill(int(pid_file.read_text()), signal.SIGTERM)

    def decisions(self) -> list[dict]:
        return [event for event in logged_events(self.log)
                if event.get("event") == "client_auth.decision"]


def first_line(result: subprocess.CompletedProcess[str]) -> str:
    return (result.stdout.splitlines() or [result.stderr])[0]


@pytest.mark.slow
def test_the_readme_nginx_walkthrough_runs_as_written(tmp_path):
    require_executable("nginx")
    require_executable("envsubst")
    walk = Walkthrough(tmp_path, (9443, 8080, 9090))
    assert walk.run("readme-nginx-setup").returncode == 0
    with walk.serving("readme-nginx-serve", 9090, "var/nginx/nginx.pid"):
        sent = walk.run("readme-nginx-send")
        assert sent.stdout.startswith("#1 ack: acknowledged"), sent.stdout + sent.stderr
        refused = walk.run("readme-nginx-refused")
        assert refused.stdout.startswith("#1 fault: HTTP 403 SOAP fault: Client certificate "
                                         "not accepted."), refused.stdout + refused.stderr
        assert walk.run("readme-nginx-stop").returncode == 0
    decisions = walk.decisions()
    assert [d["outcome"] for d in decisions] == ["accept", "reject"]
    assert [f["code"] for f in decisions[1]["findings"]] == ["missing_intermediate",
                                                              "missing_client_auth_eku"]
    assert (walk.checkout / "var" / "nginx-example" / "inbox.db").exists()


@pytest.mark.slow
def test_the_readme_haproxy_walkthrough_runs_as_written(tmp_path):
    """The example as it ships, with no override: HAProxy passes TLS through with a PROXY
    header, omgate decides in its own handshake and names the client HAProxy named."""
    require_executable("haproxy")
    walk = Walkthrough(tmp_path, (9443, 8445, 9090))
    assert walk.run("readme-haproxy-setup").returncode == 0
    with walk.serving("readme-haproxy-serve", 9090, "var/haproxy/haproxy.pid"):
        started = walk.run("readme-haproxy-start")
        assert started.returncode == 0, started.stdout + started.stderr
        sent = walk.run("readme-haproxy-send")
        assert first_line(sent).startswith("#1 ack: acknowledged"), sent.stdout + sent.stderr
        refused = walk.run("readme-haproxy-refused")
        assert first_line(refused).startswith(
            "#1 fault: HTTP 403 SOAP fault: Client certificate not accepted."), refused.stdout
        assert walk.run("readme-haproxy-stop").returncode == 0
        pid = int((walk.checkout / "var" / "haproxy" / "haproxy.pid").read_text())
        deadline = time.monotonic() + 10
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not Path(f"/proc/{pid}").exists(), "the stop block left HAProxy running"
    decisions = walk.decisions()
    assert [d["outcome"] for d in decisions] == ["accept", "reject"]
    for decision in decisions:
        assert decision["source"] == "tls"
        assert decision["proxy"].startswith("127.0.0.1:")  # HAProxy, the TCP peer
        assert decision["peer"] != decision["proxy"]  # the client, from the PROXY header
    assert [f["code"] for f in decisions[1]["findings"]] == ["missing_intermediate",
                                                              "missing_client_auth_eku"]
    assert (walk.checkout / "var" / "haproxy-example" / "inbox.db").exists()


# -- HAProxy in TCP mode, PROXY protocol v2 to omgate's own TLS listener ---------------------

@pytest.fixture
def haproxy(tmp_path):
    binary = require_executable("haproxy")
    daemons = Daemons()

    def start(omgate_tls: int, omgate_health: int) -> int:
        port = free_port()
        env = {**os.environ, "HAPROXY_LISTEN": f"127.0.0.1:{port}",
               "OMGATE_TLS": f"127.0.0.1:{omgate_tls}", "OMGATE_HEALTH_PORT": str(omgate_health)}
        return daemons.start([binary, "-f", str(EXAMPLES / "haproxy" / "haproxy.cfg"), "-db"],
                             port, tmp_path / "haproxy.log", env)

    yield start
    daemons.stop()


def exchange(port: int, context: ssl.SSLContext, preamble: bytes = b"",
             headers: bytes = b"") -> tuple[bytes, int]:
    """POST over one TLS connection (after ``preamble`` in clear, say a PROXY header, and
    with extra ``headers`` lines); returns the answer and the client's local port."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as raw:
        raw.sendall(preamble)
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            local_port = tls.getsockname()[1]
            tls.sendall(b"POST /salesforce/outbound HTTP/1.1\r\nHost: localhost\r\n"
                        b"Content-Type: text/xml\r\nConnection: close\r\n" + headers
                        + f"Content-Length: {len(BODY)}\r\n\r\n".encode() + BODY)
            answer = b""
            while chunk := tls.recv(65536):
                answer += chunk
    return answer, local_port


def test_haproxy_passthrough_with_proxy_protocol(omgate_server, haproxy, client_pki, dev_pki):
    tls_port, health_port = free_port(), free_port()
    server = omgate_server(merge(example("haproxy"), {
        "server": {"bind": [f"127.0.0.1:{tls_port}"], "health_bind": f"127.0.0.1:{health_port}",
                   "certfile": dev_pki / "server.pem", "keyfile": dev_pki / "server.key",
                   "public_names": ["localhost"], "trusted_proxies": ["127.0.0.1/32"]},
        "client_auth": {"trust": [client_pki.root_file]},
    }), port=tls_port)
    port = haproxy(tls_port, health_port)
    answer, local_port = exchange(port, client_context(dev_pki / "ca.pem",
                                                       client_pki.cases["valid"]))
    assert b"<Ack>true</Ack>" in answer
    decision = server.wait_for("client_auth.decision", lambda e: e["outcome"] == "accept")
    assert decision["peer"] == f"127.0.0.1:{local_port}"  # from the PROXY header
    assert decision["proxy"].startswith("127.0.0.1:")
    assert decision["source"] == "tls"
    # one address on every line of a request: the client's, even where it shares HAProxy's
    accepted = server.wait_for("om.accepted", lambda e: e["correlation_id"] == decision[
        "correlation_id"])
    assert accepted["peer"] == decision["peer"], (accepted, decision)

    untrusted = client_pki.cases["untrusted"]
    answer, _ = exchange(port, client_context(dev_pki / "ca.pem", untrusted))
    assert answer.startswith(b"HTTP/1.1 403")
    refused = server.wait_for("client_auth.decision", lambda e: e["outcome"] == "reject")
    rejected = server.wait_for("om.rejected", lambda e: e["correlation_id"] == refused[
        "correlation_id"])
    assert rejected["peer"] == refused["peer"] != decision["peer"]
    inspected = json.loads(run_omgate("inspect", str(untrusted.chain), "--config",
                                      str(server.config_path), "--json").stdout)
    assert [f["code"] for f in refused["findings"]] == ["untrusted_root"]
    assert [f["message"] for f in refused["findings"]] == [
        f["message"] for f in inspected["findings"]]

    # A trusted peer that does not send the PROXY header is cut off and logged.
    with socket.create_connection(("127.0.0.1", tls_port), timeout=10) as raw:
        raw.sendall(b"\x16\x03\x01\x00\x10" + b"\x00" * 16)  # a ClientHello-like start
        raw.settimeout(10)
        assert raw.recv(100) == b""
    server.wait_for("proxy_protocol.invalid")


def test_proxy_protocol_source_and_allowed_client_networks(omgate_server, client_pki, dev_pki):
    server = omgate_server({"server": {"proxy_protocol": True,
                                       "trusted_proxies": ["127.0.0.1/32"],
                                       "allowed_client_networks": ["198.51.100.0/24"]},
                            "client_auth": {"mode": "require"}})
    context = client_context(dev_pki / "ca.pem", client_pki.cases["valid"])

    def through_proxy(source: str, headers: bytes = b"") -> bytes:
        header = f"PROXY TCP4 {source} 127.0.0.1 40001 443\r\n".encode()
        return exchange(server.https_port, context, header, headers)[0]

    assert b"<Ack>true</Ack>" in through_proxy("198.51.100.20")
    server.wait_for("client_auth.decision", lambda e: e["peer"] == "198.51.100.20:40001")
    refused = through_proxy("203.0.113.50")
    assert refused.startswith(b"HTTP/1.1 403")
    event = server.wait_for("om.rejected",
                            lambda e: e["reason"] == "client_address_not_allowed")
    assert "203.0.113.50" in event["detail"]
    # The client, not the passthrough balancer, wrote this header: it changes nothing.
    spoofed = through_proxy("203.0.113.51", b"X-Forwarded-For: 198.51.100.20\r\n")
    assert spoofed.startswith(b"HTTP/1.1 403")
    event = server.wait_for("om.rejected", lambda e: "203.0.113.51" in e.get("detail", ""))
    assert event["reason"] == "client_address_not_allowed"
    unnamed = exchange(server.https_port, context, b"PROXY UNKNOWN\r\n",
                       b"X-Forwarded-For: 198.51.100.20\r\n")[0]
    assert unnamed.startswith(b"HTTP/1.1 403")
    server.wait_for("om.rejected", lambda e: "PROXY header names none" in e.get("detail", ""))


# -- Envoy's XFCC and the ALB header, built by hand ------------------------------------------

def example_envoy_details() -> tuple[str, ...]:
    """What the example's Envoy forwards (its set_current_client_cert_details)."""
    config = (EXAMPLES / "envoy" / "envoy.yaml").read_text()
    block = re.search(r"set_current_client_cert_details:\n((?:\s+\w+: true\n)+)", config)
    assert block is not None
    return tuple(re.findall(r"(\w+): true", block.group(1)))


def xfcc_for(case) -> str:
    """The XFCC the example's Envoy writes for a client presenting ``case``'s chain."""
    return envoy_xfcc(tuple(x509.load_pem_x509_certificates(case.chain.read_bytes())),
                      example_envoy_details())


def plain_example(omgate_server, name: str, client_pki, *, trust_this_host: bool = True):
    """An example deployment's omgate, on a free plain port; returns it and its URL."""
    plain = free_port()
    server_keys = {"plain_bind": [f"127.0.0.1:{plain}"],
                   "health_bind": f"127.0.0.1:{free_port()}"}
    if trust_this_host:  # else the example's own trusted_proxies stay, which exclude us
        server_keys["trusted_proxies"] = ["127.0.0.1/32"]
    server = omgate_server(merge(example(name), {
        "server": server_keys, "client_auth": {"trust": [client_pki.root_file]}}))
    return server, f"http://127.0.0.1:{plain}/salesforce/outbound"


def test_envoy_xfcc_from_a_trusted_proxy(omgate_server, client_pki):
    server, url = plain_example(omgate_server, "envoy", client_pki)
    assert is_ack(httpx.post(url, content=BODY, headers={
        **SOAP_HEADERS, "X-Forwarded-Client-Cert": xfcc_for(client_pki.cases["valid"])}))
    refused = httpx.post(url, content=BODY, headers={
        **SOAP_HEADERS, "X-Forwarded-Client-Cert": xfcc_for(client_pki.cases["untrusted"])})
    assert refused.status_code == 403
    garbled = httpx.post(url, content=BODY, headers={**SOAP_HEADERS,
                                                     "X-Forwarded-Client-Cert": 'Cert="%2D'})
    assert garbled.status_code == 403  # a header that cannot be read is judged, and refused
    decision = server.wait_for("client_auth.decision", lambda e: any(
        f["code"] == "unreadable_certificate" for f in e["findings"]))
    assert "unterminated quote" in decision["findings"][0]["message"]
    assert decision["source"] == "forwarded" and decision["outcome"] == "reject"


def test_envoy_forwards_only_what_omgate_reads():
    assert example_envoy_details() == ("cert", "chain")  # no names: they are not quoted


def test_xfcc_forged_through_a_certificate_name_is_not_believed(omgate_server, client_pki):
    """A self-signed certificate whose DNS name carries a victim's chain, behind an Envoy
    that also forwards names: omgate must not judge the victim's chain."""
    server, url = plain_example(omgate_server, "envoy", client_pki)
    victim = tuple(x509.load_pem_x509_certificates(
        client_pki.cases["valid"].chain.read_bytes()))
    attacker = self_signed_with_dns_name(f'x,Cert="{url_pem(*victim)}"')
    header = envoy_xfcc((attacker,), ("cert", "subject", "uri", "dns"))
    response = httpx.post(url, content=BODY, headers={**SOAP_HEADERS,
                                                      "X-Forwarded-Client-Cert": header})
    assert not is_ack(response)
    server.wait_for("om.rejected")
    log = server.log_path.read_text()
    victim_sha256 = hashlib.sha256(victim[0].public_bytes(Encoding.DER)).hexdigest()
    assert victim_sha256 not in log  # no decision line names the victim's certificate
    assert all(decision["outcome"] == "reject" for decision in server.events(
        "client_auth.decision"))
    assert "after a URI or DNS name" in log


def test_forged_xfcc_sent_straight_to_omgate_is_ignored_and_logged(omgate_server, client_pki):
    server, url = plain_example(omgate_server, "envoy", client_pki, trust_this_host=False)
    forged = xfcc_for(client_pki.cases["valid"])
    response = httpx.post(url, content=BODY,
                          headers={**SOAP_HEADERS, "X-Forwarded-Client-Cert": forged,
                                   "X-Forwarded-For": "10.9.9.9"})
    assert response.status_code == 403
    decision = server.wait_for("client_auth.decision", lambda e: e["outcome"] == "reject")
    codes = [f["code"] for f in decision["findings"]]
    assert codes == ["no_client_cert", "forwarded_from_untrusted_peer"]
    warning = decision["findings"][1]
    assert "x-forwarded-client-cert" in warning["message"]
    assert "x-forwarded-for" in warning["message"]
    assert decision["peer"].startswith("127.0.0.1")  # the forged X-Forwarded-For was ignored


def test_forged_header_on_the_tls_listener(omgate_server, client_pki):
    # a proxy network that is not this client's: without one, omgate would not start
    server = omgate_server({"server": {"trusted_proxies": ["192.0.2.0/24"]},
                            "client_auth": {"mode": "require", "forwarded_cert": "xfcc"}})
    response = server.post(BODY, headers={**SOAP_HEADERS, "X-Forwarded-Client-Cert":
                                          xfcc_for(client_pki.cases["valid"])})
    assert response.status_code == 403
    decision = server.wait_for("client_auth.decision",
                               lambda e: any(f["code"] == "forwarded_from_untrusted_peer"
                                             for f in e["findings"]))
    assert decision["source"] == "tls"


def test_aws_alb_passthrough_header(omgate_server, client_pki):
    server, url = plain_example(omgate_server, "aws-alb", client_pki)

    def alb(case) -> str:
        return quote(case.chain.read_text(), safe="+=/")

    assert is_ack(httpx.post(url, content=BODY, headers={
        **SOAP_HEADERS, "X-Amzn-Mtls-Clientcert": alb(client_pki.cases["valid"])}))
    expired = httpx.post(url, content=BODY, headers={
        **SOAP_HEADERS, "X-Amzn-Mtls-Clientcert": alb(client_pki.cases["expired"])})
    assert expired.status_code == 403
    decision = server.wait_for("client_auth.decision", lambda e: e["outcome"] == "reject")
    assert [f["code"] for f in decision["findings"]] == ["expired"]
    der = base64.b64encode(b"\x30\x03\x02\x01\x01").decode()
    assert httpx.post(url, content=BODY, headers={
        **SOAP_HEADERS, "X-Amzn-Mtls-Clientcert": der}).status_code == 403
    unreadable = server.wait_for("client_auth.decision", lambda e: any(
        f["code"] == "unreadable_certificate" for f in e["findings"]))
    assert "holds no PEM certificate" in unreadable["findings"][0]["message"]


# -- SIGTERM: readiness first, nothing acknowledged lost ----------------------------------------

def test_sigterm_drains_readiness_first_and_loses_nothing_acknowledged(omgate_server,
                                                                       client_pki):
    health = free_port()
    server = omgate_server({"server": {"drain_seconds": 1.5, "shutdown_timeout": 10,
                                       "health_bind": f"127.0.0.1:{health}"}})
    acked: set[str] = set()
    lock = threading.Lock()
    stop = threading.Event()

    def sender(number: int) -> None:
        sequence = 0
        with server.client() as client:
            while not stop.is_set():
                ids = [f"04l{number}{part}{sequence:010d}AAA" for part in "BC"]
                try:
                    response = client.post("/salesforce/outbound", headers=SOAP_HEADERS,
                                           content=envelope(*(notification(i) for i in ids)))
                except httpx.HTTPError:
                    return
                if is_ack(response):
                    with lock:
                        acked.update(ids)
                sequence += 1

    threads = [threading.Thread(target=sender, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    while len(acked) < 60:
        time.sleep(0.01)
    server.process.send_signal(signal.SIGTERM)
    readiness = []
    deadline = time.monotonic() + 1.2
    while time.monotonic() < deadline:
        try:
            readiness.append(httpx.get(f"http://127.0.0.1:{health}/readyz").status_code)
        except httpx.HTTPError:
            break
        time.sleep(0.1)
    assert readiness and set(readiness) == {503}
    acked_while_draining = len(acked)
    assert server.process.wait(15) == 0
    stop.set()
    for thread in threads:
        thread.join(10)
    assert len(acked) >= acked_while_draining
    stored = {json.loads(line)["notification_id"] for line in run_omgate(
        "inbox", "export", "--config", str(server.config_path)).stdout.splitlines()}
    assert acked <= stored
    names = [e["event"] for e in server.logs()]
    assert names.index("server.draining") < names.index("server.stopped")


def test_request_mode_acknowledges_behind_an_unreadable_forwarded_certificate(omgate_server):
    """A forwarded certificate is data like any other: one that cannot be read is judged by
    the policy (never an HTTP error), and request mode refuses nothing for it."""
    plain = free_port()
    server = omgate_server({
        "server": {"plain_bind": [f"127.0.0.1:{plain}"], "trusted_proxies": ["127.0.0.1/32"]},
        "client_auth": {"mode": "request", "forwarded_cert": "pem-header:X-SSL-Client-Cert"}})
    response = httpx.post(f"http://127.0.0.1:{plain}/salesforce/outbound", content=BODY,
                          headers={**SOAP_HEADERS, "X-SSL-Client-Cert": "not a certificate"})
    assert is_ack(response), response.text
    decision = server.wait_for("client_auth.decision")
    assert decision["source"] == "forwarded" and decision["outcome"] == "reject"
    assert decision["would_reject"] is True
    assert [(f["code"], f["severity"]) for f in decision["findings"]] == [
        ("unreadable_certificate", "error")]
    assert "X-SSL-Client-Cert" in decision["findings"][0]["message"]
    assert decision["chain"][0]["sha256"]  # the header, kept by digest


def test_an_idle_health_probe_connection_does_not_hold_the_exit(omgate_server):
    """A balancer's keep-alive /readyz connection, idle during the drain, is closed with
    the rest: the process exits soon after drain_seconds, not after the idle timeout."""
    health = free_port()
    server = omgate_server({"server": {"drain_seconds": 1, "shutdown_timeout": 20,
                                       "idle_timeout": 30, "health_bind": f"127.0.0.1:{health}"}})
    with httpx.Client(base_url=f"http://127.0.0.1:{health}") as prober:
        assert prober.get("/readyz").status_code == 200
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert prober.get("/readyz").status_code == 503  # the same connection, kept alive
        assert server.process.wait(20) == 0
        took = time.monotonic() - started
    assert took < 6, f"shutdown took {took:.1f} s with an idle probe connection open"
