"""`omgate probe` against servers with faults (omgate and real nginx), and `omgate send`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from behind_proxy import Daemons
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from harness import PAYLOADS, free_port, require, require_executable, run_omgate
from server_pki import HOST, build_server_pki

from service.clientauth import chain_fingerprint
from service.tools.pki import issue, name

# What a client sees: the ones `omgate check` also finds, minus the key checks (a server
# with a mismatched or 1024-bit key does not even start under OpenSSL's defaults).
PROBED = ["correct", "no_intermediate", "wrong_order", "root_included", "expired",
          "wildcard_one_label", "self_signed", "client_auth_only"]
ACK_BODY = ('<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv='
            '"http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body><notificationsResponse '
            'xmlns="http://soap.sforce.com/2005/09/outbound"><Ack>true</Ack>'
            "</notificationsResponse></soapenv:Body></soapenv:Envelope>")


@pytest.fixture(scope="module")
def server_pki(tmp_path_factory):
    return build_server_pki(tmp_path_factory.mktemp("server-pki"))


def probe(port: int, root: Path, host: str = HOST, *args: str) -> tuple[int, dict]:
    result = run_omgate("probe", f"https://{host}:{port}/salesforce/outbound", "--ca",
                        str(root), "--connect", "127.0.0.1", "--json", *args, timeout=120)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)


def chain_codes(report: dict, severity: str) -> set[str]:
    return {finding["code"] for chain in report["chains"].values()
            for finding in chain["findings"] if finding["severity"] == severity}


def probed_host(label: str) -> str:
    return f"a.b.{HOST}" if label == "wildcard_one_label" else HOST


def assert_probe_names(report: dict, case, status: int) -> None:
    assert chain_codes(report, "error") == case.errors, report["chains"]
    assert chain_codes(report, "warning") == case.warnings, report["chains"]
    [chain] = report["chains"].values()
    assert len(chain["certificates"]) == case.chain.read_text().count("BEGIN CERTIFICATE")
    for finding in chain["findings"]:
        assert finding["hint"]
    assert status == (1 if case.errors else 0)


@pytest.mark.parametrize("label", PROBED)
def test_probe_names_each_fault_of_an_omgate_server(omgate_server, server_pki, label):
    case = server_pki.cases[label]
    server = omgate_server({"server": {"certfile": case.chain, "keyfile": case.key,
                                       "public_names": []}})
    status, report = probe(server.https_port, server_pki.root, probed_host(label), "--post")
    assert_probe_names(report, case, status)
    assert report["post"]["result"] == "ack"
    assert "<Ack>true</Ack>" in report["post"]["body"]
    stored = json.loads(run_omgate("inbox", "list", "--config",
                                   str(server.config_path)).stdout)
    assert [item["notification_id"] for item in stored] == report["post"]["notification_ids"]


NGINX = """
{modules}
worker_processes 1;
pid {run}/nginx.pid;
error_log {run}/error.log warn;
events {{ worker_connections 64; }}
{body}
"""
TEMP_PATHS = ("client_body_temp_path {run}/cb; proxy_temp_path {run}/px; "
              "fastcgi_temp_path {run}/fc; uwsgi_temp_path {run}/uw; scgi_temp_path {run}/sc;")


def start_nginx(daemons: Daemons, folder: Path, port: int, body: str,
                modules: str = "") -> int:
    nginx = require_executable("nginx")
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "nginx.conf"
    config.write_text(NGINX.format(run=folder, body=body.replace("{run}", str(folder)),
                                   modules=modules))
    return daemons.start([nginx, "-c", str(config), "-p", str(folder), "-e",
                          str(folder / "error.log"), "-g", "daemon off;"], port,
                         folder / "error.log")


def https_server(case, port: int) -> str:
    return ("http { access_log off; " + TEMP_PATHS + f" server {{ listen 127.0.0.1:{port} ssl; "
            f"ssl_certificate {case.chain}; ssl_certificate_key {case.key}; "
            "location / { default_type 'text/xml; charset=utf-8'; "
            f"return 200 '{ACK_BODY}'; }} }} }}")


@pytest.mark.parametrize("label", PROBED)
def test_probe_names_each_fault_of_an_nginx_server(server_pki, tmp_path, label):
    case = server_pki.cases[label]
    daemons = Daemons()
    try:
        port = free_port()
        start_nginx(daemons, tmp_path / "nginx", port, https_server(case, port))
        status, report = probe(port, server_pki.root, probed_host(label), "--post")
    finally:
        daemons.stop()
    assert_probe_names(report, case, status)
    assert report["post"]["result"] == "ack"


def test_probe_reports_a_bad_node_behind_a_round_robin_balancer(omgate_server, server_pki,
                                                                tmp_path):
    good, bad = server_pki.cases["correct"], server_pki.cases["expired"]
    nodes = [omgate_server({"server": {"certfile": case.chain, "keyfile": case.key,
                                       "public_names": [HOST]}}) for case in (good, bad)]
    module = Path("/usr/lib/nginx/modules/ngx_stream_module.so")
    require(module.exists(), "nginx's stream module (libnginx-mod-stream) is not installed")
    balancer = free_port()
    stream = ("stream { upstream nodes { " + " ".join(
        f"server 127.0.0.1:{node.https_port};" for node in nodes)
        + f" }} server {{ listen 127.0.0.1:{balancer}; proxy_pass nodes; }} }}")
    daemons = Daemons()
    try:
        start_nginx(daemons, tmp_path / "balancer", balancer, stream,
                    modules=f"load_module {module};")
        status, report = probe(balancer, server_pki.root, HOST, "--connections", "4")
        text = run_omgate("probe", f"https://{HOST}:{balancer}/salesforce/outbound", "--ca",
                          str(server_pki.root), "--connect", "127.0.0.1", "--connections", "4",
                          "--no-post", timeout=120).stdout
    finally:
        daemons.stop()
    assert status == 1
    assert report["different_chains"] is True
    assert len(report["chains"]) == 2
    assert len({c["chain_sha256"] for c in report["connections"]}) == 2
    per_chain = [{f["code"] for f in chain["findings"]} for chain in report["chains"].values()]
    assert sorted(per_chain, key=len) == [set(), {"expired"}]
    assert "DIFFERENT CHAINS: 4 connections were served 2 different chains" in text


def test_probe_says_plainly_when_nothing_or_no_tls_answers(tmp_path):
    closed = run_omgate("probe", f"https://127.0.0.1:{free_port()}/x")
    assert closed.returncode == 1
    assert "cannot connect to 127.0.0.1:" in closed.stdout
    assert "refused" in closed.stdout.lower()
    plain_port = free_port()
    plain = subprocess.Popen(["python3", "-m", "http.server", str(plain_port), "--bind",
                              "127.0.0.1"], cwd=tmp_path, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        from behind_proxy import wait_port

        log = tmp_path / "none.log"
        log.touch()
        wait_port(plain_port, plain, log)
        result = run_omgate("probe", f"https://127.0.0.1:{plain_port}/x")
    finally:
        plain.terminate()
        plain.wait(10)
    assert result.returncode == 1
    assert "does not speak TLS" in result.stdout
    assert run_omgate("probe", "http://example.test/").returncode == 2


def test_send_generates_and_reports_each_message(omgate_server, client_pki):
    server = omgate_server({"client_auth": {"mode": "require"}})
    valid = client_pki.cases["valid"]
    common = ["--ca", str(server.ca_path)]
    result = run_omgate("send", f"{server.url}/salesforce/outbound", "--generate", "Contact",
                        "--count", "12", "--notifications", "3", "--concurrency", "3",
                        "--client-cert", str(valid.chain), "--client-key", str(valid.key),
                        *common, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert sum(": acknowledged" in line for line in lines) == 12
    assert lines[-1].startswith("12/12 acknowledged")
    stored = json.loads(run_omgate("inbox", "list", "--config", str(server.config_path),
                                   "--limit", "100").stdout)
    assert len(stored) == 36
    assert {item["sobject_type"] for item in stored} == {"Contact"}

    refused = run_omgate("send", f"{server.url}/salesforce/outbound", "--payload",
                         str(PAYLOADS / "amplabs-create_account.xml"), "--count", "2", *common)
    assert refused.returncode == 1
    assert refused.stdout.count("fault: HTTP 403 SOAP fault: Client certificate not accepted") \
        == 2
    assert refused.stdout.splitlines()[-1].startswith("0/2 acknowledged")

    nowhere = run_omgate("send", f"https://127.0.0.1:{free_port()}/x", "--generate", "Account",
                         *common)
    assert nowhere.returncode == 1
    assert "transport_error: ConnectionRefusedError" in nowhere.stdout


def test_send_presents_a_client_chain_in_its_files_order(omgate_server, client_pki, tmp_path):
    server = omgate_server({"client_auth": {"mode": "request"}})
    valid = client_pki.cases["valid"]
    leaf, root = valid.leaf.read_bytes(), client_pki.root.pem()
    intermediate = client_pki.intermediate.pem()
    files = {  # file: (its content, the chain presented, whether send says it moved the leaf)
        "issuers-misordered.pem": (leaf + root + intermediate, [leaf, root, intermediate],
                                   False),
        "leaf-last.pem": (intermediate + leaf, [leaf, intermediate], True),
    }
    for filename, (content, presented, moved) in files.items():
        (tmp_path / filename).write_bytes(content)
        result = run_omgate("send", f"{server.url}/salesforce/outbound", "--generate",
                            "Account", "--ca", str(server.ca_path), "--client-cert",
                            str(tmp_path / filename), "--client-key", str(valid.key))
        assert result.returncode == 0, result.stdout + result.stderr
        assert ("TLS sends that certificate first" in result.stdout) is moved, result.stdout
        sent = tuple(x509.load_pem_x509_certificate(pem) for pem in presented)
        decision = server.wait_for("client_auth.decision", lambda e, s=sent: e[
            "chain_sha256"] == chain_fingerprint(s))
        assert [c["subject"] for c in decision["chain"]] == [
            c.subject.rfc4514_string() for c in sent]
    misordered = server.wait_for("client_auth.decision", lambda e: any(
        f["code"] == "chain_out_of_order" for f in e["findings"]))
    assert misordered["chain"][1]["subject"] == client_pki.root.certificate.subject \
        .rfc4514_string()


def test_send_says_when_the_key_belongs_to_no_certificate(client_pki):
    valid, expired = client_pki.cases["valid"], client_pki.cases["expired"]
    result = run_omgate("send", f"https://127.0.0.1:{free_port()}/x", "--generate", "Account",
                        "--client-cert", str(valid.chain), "--client-key", str(expired.key))
    assert result.returncode == 2
    assert (f"the key in {expired.key} belongs to none of the 2 certificates in "
            f"{valid.chain}") in result.stderr
    assert "KEY_VALUES_MISMATCH" not in result.stderr


def test_probe_posts_nothing_unless_asked_and_says_what_the_server_asked_for(omgate_server,
                                                                             client_pki):
    server = omgate_server({"client_auth": {"advertise_ca_names": "anchors"}})
    url = f"https://localhost:{server.https_port}/salesforce/outbound"
    result = run_omgate("probe", url, "--ca", str(server.ca_path), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["post"] is None
    assert json.loads(run_omgate("inbox", "list", "--config",
                                 str(server.config_path)).stdout) == []
    root = client_pki.root.certificate.subject
    request = report["certificate_request"]
    assert request["requested"] is True
    assert request["ca_names"] == [root.rfc4514_string()]
    assert "A Java client (Salesforce) sends its certificate only when" in \
        request["explanation"]
    # a chain under another CA: Java would send nothing to this server
    other = run_omgate("probe", url, "--ca", str(server.ca_path), "--client-cert",
                       str(server.ca_path.parent / "server.pem"), "--client-key",
                       str(server.ca_path.parent / "server.key"))
    assert "warn  no_client_cert" in other.stdout
    assert "No test notification was posted" in other.stdout

    unasked = omgate_server({"client_auth": {"mode": "off"}})
    text = run_omgate("probe", f"https://localhost:{unasked.https_port}/salesforce/outbound",
                      "--ca", str(server.ca_path)).stdout
    assert "The server did not ask for a client certificate" in text
    listed_none = run_omgate("probe", f"https://localhost:{unasked.https_port}/x", "--ca",
                             str(server.ca_path), "--json")
    assert json.loads(listed_none.stdout)["certificate_request"]["requested"] is False


def test_probe_counts_a_post_that_was_not_acknowledged(omgate_server):
    server = omgate_server({"client_auth": {"mode": "require"}})
    result = run_omgate("probe", f"https://localhost:{server.https_port}/salesforce/outbound",
                        "--ca", str(server.ca_path), "--post")
    assert result.returncode == 1
    assert ": HTTP 403 SOAP fault: Client certificate not accepted" in result.stdout
    assert result.stdout.rstrip().endswith("FAILED: 1 error, 0 warnings")


@pytest.mark.parametrize("reject_with", ["http", "handshake"])
def test_probe_reports_the_servers_verdict_on_the_client_certificate(omgate_server,
                                                                     client_pki, reject_with):
    """Without --post, a probe whose certificate the server refused said "OK: 0 errors".
    It now asks for the verdict with a request the server refuses after its certificate
    check and before storage, and says what that proves; nothing is ever stored."""
    server = omgate_server({"client_auth": {"mode": "require", "reject_with": reject_with}})
    url = f"https://localhost:{server.https_port}/salesforce/outbound"

    def probed(case, *args: str) -> subprocess.CompletedProcess[str]:
        return run_omgate("probe", url, "--ca", str(server.ca_path), "--client-cert",
                          str(case.chain), "--client-key", str(case.key), *args, timeout=120)

    refused = probed(client_pki.cases["untrusted"], "--json")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    report = json.loads(refused.stdout)
    verdict = report["client_certificate_verdict"]
    assert verdict["outcome"] == "refused"
    assert ("alert unknown_ca" if reject_with == "handshake" else "HTTP 403") in verdict["how"]
    assert "the server refused the client certificate presented" in report["problems"]
    text = probed(client_pki.cases["untrusted"]).stdout
    assert "client certificate verdict: REFUSED by the server" in text
    assert text.rstrip().endswith("FAILED: 1 error, 0 warnings"), text
    assert "[('" not in text

    accepted = probed(client_pki.cases["valid"], "--json")
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    verdict = json.loads(accepted.stdout)["client_certificate_verdict"]
    assert verdict["outcome"] == "passed"
    assert "HTTP 400" in verdict["how"] and "nothing was stored" in verdict["how"]
    assert any("got through its certificate check" in line for line in verdict["proven"])
    assert any("that a message is stored" in line for line in verdict["not_proven"])
    # the server told the two apart: the valid chain passed its gate, then was refused as
    # no outbound message; nothing reached the inbox
    server.wait_for("om.rejected", lambda e: e["reason"] == "no_notifications")
    assert json.loads(run_omgate("inbox", "list", "--config",
                                 str(server.config_path)).stdout) == []


def test_send_presents_exactly_the_certificates_of_its_file(omgate_server, tmp_path):
    """A one-certificate file and --ca holding its issuer: OpenSSL's automatic chain
    building used to append the CA, and the chain registry recorded two certificates."""
    ca = issue(name("Shared test CA"), ca=True)
    server_cert = issue(name("localhost"), issuer=ca, dns_names=("localhost",),
                        usages=(ExtendedKeyUsageOID.SERVER_AUTH,))
    client = issue(name("one-certificate client"), issuer=ca,
                   usages=(ExtendedKeyUsageOID.CLIENT_AUTH,))
    files = {"ca.pem": ca.pem(), "server.pem": server_cert.pem(),
             "server.key": server_cert.key_pem(), "client.pem": client.pem(),
             "client.key": client.key_pem()}
    for filename, data in files.items():
        (tmp_path / filename).write_bytes(data)
    server = omgate_server({"server": {"certfile": tmp_path / "server.pem",
                                       "keyfile": tmp_path / "server.key"},
                            "client_auth": {"trust": [tmp_path / "ca.pem"]}})
    sent = run_omgate("send", f"https://localhost:{server.https_port}/salesforce/outbound",
                      "--generate", "Account", "--ca", str(tmp_path / "ca.pem"),
                      "--client-cert", str(tmp_path / "client.pem"), "--client-key",
                      str(tmp_path / "client.key"))
    assert sent.returncode == 0, sent.stdout + sent.stderr
    decision = server.wait_for("client_auth.decision", lambda e: e.get("chain"))
    assert len(decision["chain"]) == 1, decision["chain"]
    assert server.stop() == 0  # the registry's counts are flushed at shutdown
    listed = json.loads(run_omgate("chains", "list", "--json", "--config",
                                   str(server.config_path)).stdout)
    [row] = [row for row in listed if "one-certificate client" in row["leaf_subject"]]
    shown = run_omgate("chains", "show", row["chain_sha256"][:16], "--pem", "--config",
                       str(server.config_path))
    assert shown.stdout.count("BEGIN CERTIFICATE") == 1, shown.stdout
    assert x509.load_pem_x509_certificate(shown.stdout.encode()) == client.certificate


def test_tls_failures_say_what_to_change(omgate_server, client_pki):
    """OpenSSL's own text ("[('SSL routines', '', 'tlsv1 unrecognized name')]",
    "SysCallError: (-1, 'Unexpected EOF')") says neither what happened nor what to do."""
    server = omgate_server({"server": {"public_names": ["localhost"]}})
    other = run_omgate("probe", f"https://other.example.test:{server.https_port}/x",
                       "--connect", "127.0.0.1", "--ca", str(server.ca_path))
    assert other.returncode == 1
    assert "does not answer to the name other.example.test" in other.stdout, other.stdout
    assert "server.public_names" in other.stdout
    assert "SSL routines" not in other.stdout

    proxied = omgate_server({"server": {"proxy_protocol": True,
                                        "trusted_proxies": ["127.0.0.1/32"]}})
    valid = client_pki.cases["valid"]
    sent = run_omgate("send", f"https://localhost:{proxied.https_port}/salesforce/outbound",
                      "--generate", "Account", "--ca", str(proxied.ca_path), "--client-cert",
                      str(valid.chain), "--client-key", str(valid.key))
    assert sent.returncode == 1
    assert "closed the connection during the TLS handshake" in sent.stdout, sent.stdout
    assert "PROXY protocol" in sent.stdout and "server.proxy_protocol" in sent.stdout
    assert "SysCallError" not in sent.stdout and "Unexpected EOF" not in sent.stdout
