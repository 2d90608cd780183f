"""The stacks `make bench` compares omgate with (bench/stacks.py), started for real: the
peer (nginx terminating mutual TLS → gunicorn with one uvicorn worker → bench/peer_app.py)
and omgate behind the same nginx. The bench's figures mean something only if these
acknowledge what they are sent, store it, and refuse what they must."""

from __future__ import annotations

import importlib.util
import json
import sqlite3
import ssl
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from harness import OUTBOUND_NS, PAYLOADS, ROOT, SOAP_HEADERS, require, require_executable
from lxml import etree

sys.path.insert(0, str(ROOT / "bench"))

from peer_app import ACK, Refused, parse
from run import Server, prepare
from stacks import omgate_behind_nginx, peer_database, peer_stack

PAYLOAD = PAYLOADS / "amplabs-batch_update_contacts.xml"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    require_executable("nginx")
    require(importlib.util.find_spec("uvicorn_worker") is not None,
            "the bench extra (gunicorn, uvicorn, uvicorn-worker) is not installed")
    prepare(tmp_path)
    return tmp_path


def post(port: int, folder: Path, body: bytes, certificate: bool = True) -> httpx.Response:
    context = ssl.create_default_context(cafile=str(folder / "ca.pem"))
    if certificate:
        context.load_cert_chain(folder / "client-chain.pem", folder / "client.key")
    with httpx.Client(verify=context, timeout=30) as client:
        return client.post(f"https://localhost:{port}/salesforce/outbound", content=body,
                           headers=SOAP_HEADERS)


def notification_ids(payload: Path) -> list[str]:
    root = etree.fromstring(payload.read_bytes())
    return [element.text for element in root.iter(f"{{{OUTBOUND_NS}}}Notification")
            for element in element.iterfind(f"{{{OUTBOUND_NS}}}Id")]


def stored(database: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(database) as connection:
        return connection.execute(
            "SELECT org, notification_id FROM notifications ORDER BY rowid").fetchall()


def mapped_libraries(pids: list[int]) -> str:
    return "".join(Path(f"/proc/{pid}/maps").read_text() for pid in pids)


@pytest.fixture
def peer_server(folder: Path) -> Iterator[Server]:
    with peer_stack(folder) as server:
        yield server


@pytest.fixture
def peer(peer_server: Server) -> int:
    return peer_server.port


@pytest.mark.slow
def test_the_peer_acknowledges_a_real_message_over_mutual_tls_and_stores_it_once(
        folder, peer_server, peer):
    ids = notification_ids(PAYLOAD)
    assert len(ids) == 3
    first = post(peer, folder, PAYLOAD.read_bytes())
    assert (first.status_code, first.text) == (200, ACK)
    # the worker that answered (up only once it has) runs on uvloop and parses HTTP with
    # httptools (uvicorn[standard])
    libraries = mapped_libraries(peer_server.pids())
    assert "/uvloop/" in libraries and "/httptools/" in libraries
    rows = stored(peer_database(folder))
    assert [notification for _, notification in rows] == ids
    assert {org for org, _ in rows} == {"00Dxx0000001gPFEAY"}

    redelivered = post(peer, folder, PAYLOAD.read_bytes())
    assert (redelivered.status_code, redelivered.text) == (200, ACK)
    assert stored(peer_database(folder)) == rows

    log = (folder / "peer" / "app.log").read_text()
    assert log.count("INFO peer accepted org=00Dxx0000001gPFEAY") == 2
    assert "notifications=3 stored=3" in log and "notifications=3 stored=0" in log


@pytest.mark.slow
def test_the_peer_refuses_a_client_without_a_certificate_and_a_malformed_message(folder,
                                                                                 peer):
    refused = post(peer, folder, PAYLOAD.read_bytes(), certificate=False)
    assert refused.status_code == 400
    assert "No required SSL certificate was sent" in refused.text
    malformed = post(peer, folder, b"<?xml version='1.0'?><notifications/>")
    assert malformed.status_code == 400 and "<Ack>" not in malformed.text
    assert not peer_database(folder).exists() or stored(peer_database(folder)) == []


def test_the_peer_parser_refuses_a_doctype_and_resolves_no_entity():
    body = PAYLOAD.read_bytes().replace(
        b"<soapenv:Envelope",
        b'<!DOCTYPE e [<!ENTITY x SYSTEM "file:///etc/passwd">]><soapenv:Envelope', 1)
    with pytest.raises(Refused, match="DOCTYPE"):
        parse(body)
    message = parse(PAYLOAD.read_bytes())
    assert [item.notification_id for item in message.notifications] == notification_ids(PAYLOAD)


@pytest.mark.slow
def test_omgate_behind_nginx_acknowledges_with_the_forwarded_certificate(folder):
    with omgate_behind_nginx(folder, f"sqlite:///{folder}/inbox.db") as server:
        answer = post(server.port, folder, PAYLOAD.read_bytes())
    assert answer.status_code == 200 and "<Ack>true</Ack>" in answer.text
    [log] = folder.glob("omgate-*.log")
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    [decision] = [line for line in lines if line["event"] == "client_auth.decision"]
    assert (decision["outcome"], decision["source"], decision["proxy"]) == (
        "accept", "forwarded", "127.0.0.1")
    assert decision["chain"][0]["subject"].startswith("CN=omgate development client")
    [accepted] = [line for line in lines if line["event"] == "om.accepted"]
    assert (accepted["notifications"], accepted["new"]) == (3, 3)
