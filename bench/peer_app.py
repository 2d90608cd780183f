"""The peer `make bench` measures omgate against: what a Python team would otherwise deploy.

A Starlette app run by gunicorn with one uvicorn worker (uvloop, httptools) behind nginx,
which terminates mutual TLS (``ssl_verify_client on``) and hands the verdict and the
client certificate on in ``X-SSL-Client-Verify`` and ``X-SSL-Client-Cert``
(bench/stacks.py starts it). Per message: the envelope parsed with a hardened lxml parser
(no DTD, no entities, no network, no huge trees), every notification committed to SQLite
(WAL, ``synchronous=FULL``, ``INSERT OR IGNORE`` on UNIQUE (org, notification id): a
redelivery is acknowledged and not stored twice), one log line, then the SOAP Ack omgate
answers. One commit per message, made by one writer thread so that the event loop keeps
reading while SQLite waits for the disk.

Environment: ``PEER_DB`` (the SQLite file, created if missing).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from lxml import etree
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
OUTBOUND = "http://soap.sforce.com/2005/09/outbound"
ACK = ('<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas'
       '.xmlsoap.org/soap/envelope/"><soapenv:Body><notificationsResponse xmlns="http://soap.'
       'sforce.com/2005/09/outbound"><Ack>true</Ack></notificationsResponse></soapenv:Body>'
       "</soapenv:Envelope>")
XML = "text/xml; charset=utf-8"
SCHEMA = """
CREATE TABLE IF NOT EXISTS notifications (
    org TEXT NOT NULL,
    notification_id TEXT NOT NULL,
    action_id TEXT NOT NULL,
    sobject BLOB NOT NULL,
    received_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    UNIQUE (org, notification_id)
)
"""

log = logging.getLogger("peer")


def _parser() -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                           dtd_validation=False, huge_tree=False, remove_comments=True)


PARSER = _parser()


class Refused(Exception):
    """A message the peer answers with a SOAP fault."""


@dataclass(frozen=True)
class Notification:
    notification_id: str
    sobject: bytes


@dataclass(frozen=True)
class Message:
    org: str
    action_id: str
    notifications: tuple[Notification, ...]


def _text(parent: etree._Element, name: str) -> str:
    value = parent.findtext(f"{{{OUTBOUND}}}{name}")
    if not value:
        raise Refused(f"no {name}")
    return str(value)


def _notification(element: etree._Element) -> Notification:
    sobject = element.find(f"{{{OUTBOUND}}}sObject")
    if sobject is None:
        raise Refused("a Notification without sObject")
    return Notification(_text(element, "Id"), etree.tostring(sobject))


def parse(body: bytes) -> Message:
    try:
        root = etree.fromstring(body, PARSER)
    except etree.XMLSyntaxError as error:
        raise Refused("not XML") from error
    if root.getroottree().docinfo.doctype:
        raise Refused("a DOCTYPE")
    notifications = root.find(f"{{{SOAP}}}Body/{{{OUTBOUND}}}notifications")
    if notifications is None:
        raise Refused("no notifications element")
    found = tuple(_notification(element)
                  for element in notifications.iterfind(f"{{{OUTBOUND}}}Notification"))
    if not found:
        raise Refused("no Notification")
    return Message(_text(notifications, "OrganizationId"), _text(notifications, "ActionId"),
                   found)


class Inbox:
    """One SQLite connection, used by one thread only: a commit per message."""

    def __init__(self, path: str) -> None:
        self.writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self.path = path
        self.connection: sqlite3.Connection | None = None

    def _open(self) -> sqlite3.Connection:
        if self.connection is None:
            self.connection = sqlite3.connect(self.path, isolation_level=None)
            self.connection.execute("PRAGMA journal_mode=WAL")
            self.connection.execute("PRAGMA synchronous=FULL")
            self.connection.execute(SCHEMA)
        return self.connection

    def _store(self, message: Message) -> int:
        connection = self._open()
        connection.execute("BEGIN IMMEDIATE")
        try:
            stored = sum(connection.execute(
                "INSERT OR IGNORE INTO notifications (org, notification_id, action_id, sobject)"
                " VALUES (?, ?, ?, ?)",
                (message.org, item.notification_id, message.action_id, item.sobject)).rowcount
                for item in message.notifications)
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")
        return stored

    async def store(self, message: Message) -> int:
        return await asyncio.get_running_loop().run_in_executor(self.writer, self._store,
                                                                message)


def fault(status: int, code: str, reason: str) -> Response:
    body = (f'<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="{SOAP}">'
            f"<soapenv:Body><soapenv:Fault><faultcode>soapenv:{code}</faultcode>"
            f"<faultstring>{reason}</faultstring></soapenv:Fault></soapenv:Body>"
            "</soapenv:Envelope>")
    return Response(body, status, media_type=XML)


def build(path: str) -> Starlette:
    inbox = Inbox(path)

    async def outbound(request: Request) -> Response:
        if request.headers.get("x-ssl-client-verify") != "SUCCESS" or not request.headers.get(
                "x-ssl-client-cert"):
            log.info("refused reason=client_certificate")
            return fault(403, "Client", "client certificate required")
        try:
            message = parse(await request.body())
        except Refused as error:
            log.info("refused reason=%r", str(error))
            return fault(400, "Client", "malformed outbound message")
        stored = await inbox.store(message)
        log.info("accepted org=%s action=%s notifications=%d stored=%d", message.org,
                 message.action_id, len(message.notifications), stored)
        return Response(ACK, media_type=XML)

    return Starlette(routes=[Route("/salesforce/outbound", outbound, methods=["POST"])])


def _logging() -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


_logging()
app = build(os.environ.get("PEER_DB", "peer.db"))
