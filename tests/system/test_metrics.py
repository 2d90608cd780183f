"""Metrics named as Prometheus expects: durations, expiry timestamps, build and process
information, with one worker and with several."""

from __future__ import annotations

import datetime as dt
import re
import shutil
import signal

import httpx
import pytest
from cryptography import x509
from harness import PAYLOADS, is_ack, run_omgate

from service.tools.pki import issue, name

ACCOUNT = (PAYLOADS / "amplabs-create_account.xml").read_bytes()


def scrape(server) -> str:
    return httpx.get(f"http://127.0.0.1:{server.extra['health_port']}/metrics").text


def sample(text: str, metric: str) -> float:
    match = re.search(rf"^{re.escape(metric)} (\S+)$", text, re.MULTILINE)
    assert match, f"no {metric} in\n{text}"
    return float(match.group(1))


def expiry(pem_path) -> float:
    return x509.load_pem_x509_certificates(pem_path.read_bytes())[0] \
        .not_valid_after_utc.timestamp()


def test_build_info_durations_and_process_metrics(omgate_server):
    server = omgate_server()
    assert is_ack(server.post(ACCOUNT))
    text = scrape(server)
    version = run_omgate("--version").stdout  # omgate V (Python P, OpenSSL O)
    [(release, python, openssl)] = re.findall(r"omgate (\S+) \(Python (\S+), OpenSSL (\S+)\)",
                                              version)
    assert (f'omgate_build_info{{openssl="{openssl}",python="{python}",version="{release}"}} '
            "1.0") in text
    assert 'omgate_request_duration_seconds_count{endpoint="/salesforce/outbound"} 1.0' in text
    assert "omgate_request_seconds" not in text
    assert sample(text, "process_resident_memory_bytes") > 10_000_000
    assert sample(text, "process_cpu_seconds_total") > 0
    assert sample(text, "process_open_fds") > 0


def test_certificate_expiry_timestamps(omgate_server, dev_pki, tmp_path):
    certfile, keyfile = tmp_path / "server.pem", tmp_path / "server.key"
    shutil.copy(dev_pki / "server.pem", certfile)
    shutil.copy(dev_pki / "server.key", keyfile)
    server = omgate_server({"server": {"certfile": certfile, "keyfile": keyfile},
                            "client_auth": {"trust": [dev_pki / "client-ca.pem"]}})
    text = scrape(server)
    served = f'omgate_server_cert_expiry_timestamp_seconds{{certfile="{certfile}"}}'
    assert sample(text, served) == expiry(dev_pki / "server.pem")
    assert "omgate_client_cert_days_left" not in text
    assert "\nomgate_client_cert_expiry_timestamp_seconds{" not in text  # nothing accepted yet

    with server.client() as anonymous:  # no certificate: request mode logs it, nothing else
        assert is_ack(anonymous.post("/salesforce/outbound", content=ACCOUNT,
                                     headers={"Content-Type": "text/xml"}))
    assert "\nomgate_client_cert_expiry_timestamp_seconds{" not in scrape(server)

    class DevClient:
        chain, key = dev_pki / "client-chain.pem", dev_pki / "client.key"

    assert is_ack(server.post(ACCOUNT, cert=DevClient))
    accepted = 'omgate_client_cert_expiry_timestamp_seconds{source="tls"}'
    assert sample(scrape(server), accepted) == expiry(dev_pki / "client.pem")

    # a renewed server certificate, loaded on SIGHUP, is the one the metric follows
    renewed_until = dt.datetime(2031, 5, 1, tzinfo=dt.UTC)
    renewed = issue(name("localhost"), dns_names=("localhost",), not_after=renewed_until)
    keyfile.write_bytes(renewed.key_pem())
    certfile.write_bytes(renewed.pem())
    server.process.send_signal(signal.SIGHUP)
    server.wait_for("tls.reloaded")
    assert sample(scrape(server), served) == renewed_until.timestamp()


@pytest.mark.slow
def test_with_several_workers_each_process_is_reported_by_pid(omgate_server):
    server = omgate_server({"server": {"workers": 2}})
    assert is_ack(server.post(ACCOUNT))
    text = scrape(server)
    pids = set(re.findall(r'^process_resident_memory_bytes\{pid="(\d+)"\}', text, re.MULTILINE))
    assert str(server.process.pid) in pids and len(pids) == 3  # the supervisor, 2 workers
    assert re.search(r'^omgate_build_info\{.*\} 1\.0$', text, re.MULTILINE)
    assert 'omgate_request_duration_seconds_count{endpoint="/salesforce/outbound"} 1.0' in text
