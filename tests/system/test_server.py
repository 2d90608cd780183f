"""The SOAP endpoint through a real running server, over real TLS sockets."""

from __future__ import annotations

import json
import socket
import ssl
import time

import httpx
import pytest
from harness import (
    CONTACTS_SESSION_ID,
    PAYLOADS,
    SOAP_HEADERS,
    WSDLS,
    break_writes,
    fault_of,
    free_port,
    is_ack,
    mend_writes,
    run_omgate,
    ssl_context,
)
from messages import envelope, message_for, notification
from soap_parse_cases import XXE, billion_laughs

from service.soap import load_wsdl

VALID = sorted(p for p in PAYLOADS.glob("*.xml")
               if p.name not in ("aspnet-empty.xml", "aspnet-ack-response.xml"))


def rejected_event(server, correlation_id: str) -> dict:
    for _ in range(50):
        events = [e for e in server.events("om.rejected") if e["correlation_id"] == correlation_id]
        if events:
            return events[0]
        time.sleep(0.05)
    raise AssertionError(f"no om.rejected with correlation id {correlation_id}")


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_every_valid_payload_is_acknowledged(shared_server, path):
    assert is_ack(shared_server.post(path.read_bytes()))


@pytest.mark.parametrize("name", ["aspnet-empty.xml", "aspnet-ack-response.xml"])
def test_payloads_without_notifications_get_a_fault_not_an_ack(shared_server, name):
    response = shared_server.post((PAYLOADS / name).read_bytes())
    assert response.status_code == 400
    code, text, correlation = fault_of(response)
    assert code == "soapenv:Client"
    assert correlation in text
    event = rejected_event(shared_server, correlation)
    assert event["reason"] in ("no_notification", "no_notifications")
    assert event["status"] == 400


def test_redelivery_is_acknowledged_counted_and_stored_once(omgate_server):
    server = omgate_server()
    body = (PAYLOADS / "amplabs-batch_update_contacts.xml").read_bytes()
    assert is_ack(server.post(body))
    assert is_ack(server.post(body))
    accepted = server.events("om.accepted")
    assert [(e["new"], e["duplicates"]) for e in accepted] == [(3, 0), (0, 3)]
    assert accepted[0]["notifications"] == 3
    assert accepted[0]["org_id"] == "00Dxx0000001gPFEAY"
    assert accepted[0]["action_id"] == "04kxx00000000blBAA"
    assert accepted[0]["endpoint"] == "/salesforce/outbound"
    listed = json.loads(run_omgate("inbox", "list", "--config", str(server.config_path)).stdout)
    assert [item["notification_id"] for item in listed] == [
        "04lxx000000CaSeAAK", "04lxx000000CaSfAAK", "04lxx000000CaSgAAK"]


def test_a_redelivery_that_differs_is_acknowledged_logged_and_kept_apart(omgate_server):
    """Notification Ids stored in advance must not silently swallow the real messages."""
    server = omgate_server({"inbox": {"store_session_id": True}})
    body = (PAYLOADS / "aspnet-contacts-2.xml").read_bytes()
    first = server.post(body)
    changed = server.post(body.replace(b"<sf:Title>White</sf:Title>",
                                       b"<sf:Title>Grey</sf:Title>"))
    assert is_ack(first) and is_ack(changed)
    [event] = server.events("om.duplicate_conflict")
    assert event["notification_id"] == "04l1I000000fztEQAQ"
    assert event["org_id"] == "012345678901234"
    assert event["endpoint"] == "/salesforce/outbound"
    assert event["correlation_id"] == changed.headers["x-correlation-id"]
    assert event["stored_sha256"] != event["redelivered_sha256"]
    assert "session_id" not in event
    assert CONTACTS_SESSION_ID not in server.log_path.read_text()
    accepted = server.events("om.accepted")[-1]
    assert (accepted["new"], accepted["duplicates"], accepted["conflicts"]) == (0, 1, 1)

    config = str(server.config_path)
    listed = json.loads(run_omgate("inbox", "list", "--conflicts", "--config", config).stdout)
    assert [(item["notification_id"], item["conflicts"]) for item in listed] == [
        ("04l1I000000fztEQAQ", 1)]
    assert listed[0]["fields"]["Title"] == "White"  # the first content stays
    shown = json.loads(run_omgate("inbox", "show", str(listed[0]["id"]), "--config",
                                  config).stdout)
    assert shown["content_sha256"] == event["stored_sha256"]
    [redelivery] = shown["conflicting_redeliveries"]
    assert redelivery["content_sha256"] == event["redelivered_sha256"]
    assert redelivery["fields"]["Title"] == "Grey"
    assert "session_id" not in redelivery
    metrics = httpx.get(f"http://127.0.0.1:{server.extra['health_port']}/metrics").text
    assert 'omgate_notifications_total{kind="conflict"} 1.0' in metrics
    assert 'omgate_notifications_total{kind="duplicate"} 1.0' in metrics


def big_body(size: int) -> bytes:
    padding = "x" * size
    return envelope(notification(fields=f"<sf:Description>{padding}</sf:Description>"))


@pytest.mark.parametrize(("request_kwargs", "status", "reason"), [
    ({"content": b"<oops"}, 400, "malformed_xml"),
    ({"content": b"<a/>"}, 400, "not_soap_envelope"),
    ({"content": (PAYLOADS / "amplabs-create_account.xml").read_bytes(),
      "headers": {"Content-Type": "application/json"}}, 415, "unsupported_media_type"),
    ({"content": (PAYLOADS / "amplabs-create_account.xml").read_bytes(),
      "headers": {}}, 415, "unsupported_media_type"),
    ({"content": envelope(*[notification(f"04lxx000000C{i:04d}AK") for i in range(101)])},
     400, "too_many_notifications"),
    ({"content": XXE}, 400, "dtd_forbidden"),
    ({"content": billion_laughs()}, 400, "dtd_forbidden"),
    ({"content": big_body(70_000)}, 413, "body_too_large"),
    ({"content": iter([big_body(70_000)])}, 413, "body_too_large"),
    ({"method": "GET"}, 405, "method_not_allowed"),
    ({"path": "/elsewhere"}, 404, "unknown_endpoint"),
], ids=["malformed", "not-soap", "json", "no-content-type", "101", "xxe", "laughs",
        "too-large", "too-large-chunked", "get", "unknown-path"])
def test_refusals_are_soap_faults_with_a_logged_correlation_id(omgate_server, request_kwargs,
                                                               status, reason):
    server = omgate_server({"server": {"max_body_bytes": 65536}})
    method = request_kwargs.pop("method", "POST")
    path = request_kwargs.pop("path", "/salesforce/outbound")
    request_kwargs.setdefault("headers", SOAP_HEADERS)
    with server.client() as client:
        response = client.request(method, path, **request_kwargs)
    assert response.status_code == status
    code, _text, correlation = fault_of(response)
    assert code == "soapenv:Client"
    event = rejected_event(server, correlation)
    assert (event["reason"], event["status"]) == (reason, status)
    if status == 405:
        assert response.headers["allow"] == "POST"
    assert is_ack(server.post((PAYLOADS / "amplabs-create_account.xml").read_bytes()))


def test_xxe_file_content_appears_nowhere(omgate_server, tmp_path):
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text("TOP-SECRET-7f3a9c")
    server = omgate_server()
    body = XXE.replace(b"file:///etc/hostname", f"file://{secret_file}".encode())
    response = server.post(body)
    assert response.status_code == 400
    assert b"TOP-SECRET" not in response.content
    assert "TOP-SECRET" not in server.log_path.read_text()
    assert json.loads(run_omgate("inbox", "list", "--config", str(server.config_path)).stdout) == []


def test_organization_and_action_allow_lists(omgate_server):
    server = omgate_server({
        "salesforce": {"organization_ids": ["00Dxx0000001gPF"]},
        "endpoints": [{"path": "/salesforce/outbound", "action_ids": ["04kxx00000000blAAA"]}],
    })
    account = (PAYLOADS / "amplabs-create_account.xml").read_bytes()
    assert is_ack(server.post(account))  # 18-character ID matches the 15-character entry
    other_org = account.replace(b"00Dxx0000001gPFEAY", b"00Dxx0000001gPGEAY")
    response = server.post(other_org)
    assert response.status_code == 403
    assert rejected_event(server, fault_of(response)[2])["reason"] == "organization_not_allowed"
    lower_case_org = account.replace(b"00Dxx0000001gPFEAY", b"00Dxx0000001gpfEAY")
    assert server.post(lower_case_org).status_code == 403  # IDs are case-sensitive
    other_action = account.replace(b"04kxx00000000blAAA", b"04kxx00000000bmAAA")
    response = server.post(other_action)
    assert response.status_code == 403
    assert rejected_event(server, fault_of(response)[2])["reason"] == "action_not_allowed"


def test_store_failure_answers_a_server_fault_so_salesforce_retries(omgate_server, tmp_path):
    server = omgate_server()
    break_writes(tmp_path / "inbox.db", "notifications", "disk full", "INSERT")
    body = (PAYLOADS / "amplabs-create_account.xml").read_bytes()
    response = server.post(body)
    assert response.status_code == 500
    code, _text, correlation = fault_of(response)
    assert code == "soapenv:Server"
    assert rejected_event(server, correlation)["reason"] == "store_failed"
    ready = httpx.get(f"{server.url}/readyz", verify=ssl_context(server.ca_path))
    assert ready.status_code == 200
    mend_writes(tmp_path / "inbox.db", "notifications")
    assert is_ack(server.post(body))  # the retry succeeds and is stored once
    assert server.events("om.accepted")[-1]["new"] == 1


def test_wsdl_endpoint_types_values_and_refuses_mismatches(omgate_server):
    wsdl = WSDLS / "gwestersf-Shipment__c.wsdl"
    server = omgate_server({"endpoints": [{"path": "/shipments", "wsdl": str(wsdl)},
                                          {"path": "/salesforce/outbound"}]})
    body, _ = message_for(load_wsdl(wsdl))
    assert is_ack(server.post(body, path="/shipments"))
    stored = json.loads(run_omgate("inbox", "list", "--config", str(server.config_path)).stdout)
    assert stored[0]["fields"]["gwestr__Weight__c"] == 12.5
    assert stored[0]["fields"]["gwestr__Rush__c"] is True
    assert stored[0]["endpoint"] == "/shipments"
    bad, _ = message_for(load_wsdl(wsdl), notification_id="04l5g00000AbCdEBBB",
                         overrides={"gwestr__Weight__c": "heavy"})
    response = server.post(bad, path="/shipments")
    assert response.status_code == 400
    _code, text, correlation = fault_of(response)
    assert "Notification 1 (Id 04l5g00000AbCdEBBB), field gwestr__Weight__c" in text
    assert rejected_event(server, correlation)["reason"] == "wsdl_mismatch"
    account = (PAYLOADS / "amplabs-create_account.xml").read_bytes()
    assert server.post(account, path="/shipments").status_code == 400
    assert is_ack(server.post(account, path="/salesforce/outbound"))


def test_short_ids_are_acknowledged_and_logged_as_warnings(shared_server):
    body = (PAYLOADS / "mulesoft-opportunity-15char-ids.xml").read_bytes()
    response = shared_server.post(body)
    assert is_ack(response)
    correlation = response.headers["x-correlation-id"]
    warnings = [e for e in shared_server.events("om.warning")
                if e["correlation_id"] == correlation]
    assert {e["where"] for e in warnings} == {"OrganizationId", "sObject Id"}
    assert all(e["level"] == "warning" and e["code"] == "short_id" for e in warnings)


def test_health_endpoints_and_the_extra_listeners(omgate_server):
    plain_port, health_port = free_port(), free_port()
    server = omgate_server({"server": {"plain_bind": [f"127.0.0.1:{plain_port}"],
                                       "health_bind": f"127.0.0.1:{health_port}"}})
    verify = ssl_context(server.ca_path)
    assert httpx.get(f"{server.url}/healthz", verify=verify).text == "ok\n"
    assert httpx.get(f"{server.url}/readyz", verify=verify).status_code == 200
    assert httpx.get(f"http://127.0.0.1:{health_port}/healthz").status_code == 200
    assert httpx.get(f"http://127.0.0.1:{health_port}/readyz").status_code == 200
    assert httpx.post(f"http://127.0.0.1:{health_port}/salesforce/outbound").status_code == 404
    body = (PAYLOADS / "amplabs-create_account.xml").read_bytes()
    plain = httpx.post(f"http://127.0.0.1:{plain_port}/salesforce/outbound", content=body,
                       headers=SOAP_HEADERS)
    assert is_ack(plain)


def test_readiness_fails_when_the_inbox_cannot_be_written(omgate_server, tmp_path):
    server = omgate_server()
    break_writes(tmp_path / "inbox.db", "heartbeat", "read-only file system")
    response = httpx.get(f"{server.url}/readyz", verify=ssl_context(server.ca_path))
    assert (response.status_code, response.text) == (503, "not ready\n")  # anyone may ask
    health = httpx.get(f"http://127.0.0.1:{server.extra['health_port']}/readyz")
    assert health.status_code == 503
    assert "read-only file system" in health.text
    assert httpx.get(f"{server.url}/healthz", verify=ssl_context(server.ca_path)).status_code == 200


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated")
def test_tls_is_required_on_the_tls_port_and_old_versions_are_refused(shared_server):
    with socket.create_connection(("127.0.0.1", shared_server.https_port), timeout=5) as raw:
        raw.sendall(b"POST /salesforce/outbound HTTP/1.1\r\nHost: x\r\n\r\n")
        raw.settimeout(5)
        try:
            answer = raw.recv(100)
        except OSError:
            answer = b""
        assert b"Ack" not in answer
    old = ssl_context(shared_server.ca_path)
    old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
    with (
        pytest.raises((ssl.SSLError, OSError)),
        socket.create_connection(("127.0.0.1", shared_server.https_port), timeout=5) as raw,
    ):
        old.wrap_socket(raw, server_hostname="localhost")
    assert is_ack(shared_server.post((PAYLOADS / "amplabs-create_account.xml").read_bytes()))


def test_sigterm_drains_and_exits_cleanly(omgate_server):
    server = omgate_server()
    assert is_ack(server.post((PAYLOADS / "amplabs-create_account.xml").read_bytes()))
    assert server.stop() == 0
    names = [e["event"] for e in server.logs()]
    assert names.index("server.draining") < names.index("server.stopped")


@pytest.mark.parametrize(("overrides", "words"), [
    ({"server": {"max_body_bytes": -1}}, ["[server] max_body_bytes", "positive whole number"]),
    ({"server": {"max_body_bytes": 20 * 1024 * 1024}},  # more than one client may hold
     ["[server] max_body_bytes", "max_buffered_bytes_per_client"]),
    ({"server": {"certfile": "/nonexistent/server.pem"}},
     ["[server] certfile", "/nonexistent/server.pem"]),
    ({"endpoints": [{"path": "/x", "wsdl": "/nonexistent/x.wsdl"}]},
     ["[[endpoints]] #1 wsdl", "/nonexistent/x.wsdl"]),
])
def test_a_bad_config_fails_at_start_naming_key_and_file(omgate_server, overrides, words):
    server = omgate_server(overrides, wait=False)
    assert server.process.wait(30) == 2
    output = server.log_path.read_text()
    assert str(server.config_path) in output
    for word in words:
        assert word in output


@pytest.mark.parametrize("event_loop", ["uvloop", "asyncio"])
def test_each_event_loop_serves_messages_keep_alive_and_pipelined(omgate_server, event_loop):
    # "auto" (the default, and what every other test runs on) is uvloop where it installs
    server = omgate_server({"server": {"event_loop": event_loop}})
    assert server.wait_for("server.started")["event_loop"] == event_loop
    body = (PAYLOADS / "amplabs-create_account.xml").read_bytes()
    with httpx.Client(verify=ssl_context(server.ca_path)) as client:
        for _ in range(3):  # one kept-alive connection
            answer = client.post(f"{server.url}/salesforce/outbound", content=body,
                                 headers=SOAP_HEADERS)
            assert is_ack(answer)
    request = (b"POST /salesforce/outbound HTTP/1.1\r\nHost: localhost\r\n"
               b"Content-Type: text/xml\r\nSOAPAction: \"\"\r\n"
               b"Content-Length: %d\r\n\r\n" % len(body) + body)
    with socket.create_connection(("127.0.0.1", server.https_port), timeout=10) as raw, \
            ssl_context(server.ca_path).wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(request * 2)  # two requests in one write: answered in order
        received = b""
        while received.count(b"<Ack>true</Ack>") < 2:
            chunk = tls.recv(65536)
            assert chunk, f"closed after {received!r}"
            received += chunk
    assert received.count(b"HTTP/1.1 200 ") == 2
