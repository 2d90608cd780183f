"""The console and the chain registry against hostile input: findings of an attacker's
review (each test fails on the code it was written against)."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from starlette.testclient import TestClient

from service.clientauth import ClientIdentity
from service.clientauth.model import Decision
from service.clientauth.presented import load_chain
from service.config import ChainsConfig, load_config
from service.console.app import build_console
from service.gate import RecordedDecision, Verdict
from service.inbox import open_inbox
from service.inbox.chains import LISTENER, ChainSighting
from service.observatory import registry as registry_module
from service.observatory.registry import ChainRegistry
from service.policy_loader import PolicyLoader
from service.tools.pki import issue, new_key

TOO_LONG_TO_CONVERT = "9" * 4400  # more digits than int() converts (sys.int_info)
REFUSED = Verdict(Decision("reject", ()), "request", False)
ACCEPTED = Verdict(Decision("accept", ()), "require", True)


def _cn(text: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    """A plain listener, no client certificates asked for, an empty SQLite inbox."""
    path = tmp_path / "omgate.toml"
    path.write_text(f"""
[server]
bind = []
plain_bind = ["127.0.0.1:18080"]
[client_auth]
mode = "off"
[inbox]
url = "sqlite:///{tmp_path / 'inbox.db'}"
""")
    return path


def _with_console(config_path: Path, work) -> Any:
    """``work(app)`` with the console the configuration serves (no token: loopback)."""
    config = load_config(config_path, {})

    async def run() -> Any:
        inbox = await open_inbox(config.inbox.url, group_commit=False)
        try:
            loader = PolicyLoader(config)
            app = build_console(config, inbox, loader.policy(config.client_auth.rules),
                                loader.policy(config.client_auth.rules, mode="require"),
                                token=None)
            return await work(app)
        finally:
            await inbox.close()

    return asyncio.run(run())


def _with_client(config_path: Path, calls) -> Any:
    async def work(app) -> Any:
        def use() -> Any:
            with TestClient(app, base_url="http://127.0.0.1",
                            raise_server_exceptions=False) as client:
                return calls(client)
        return await asyncio.to_thread(use)

    return _with_console(config_path, work)


# -- 1. an inbox id of more digits than int() converts: a 500 ---------------------------------

@pytest.mark.parametrize("method, path, form", [
    ("GET", f"/inbox?before={TOO_LONG_TO_CONVERT}", None),
    ("GET", f"/inbox?dead_after={TOO_LONG_TO_CONVERT}", None),
    ("GET", f"/inbox/retry-all?after={TOO_LONG_TO_CONVERT}", None),
    ("GET", f"/inbox/{TOO_LONG_TO_CONVERT}", None),
    ("POST", f"/inbox/{TOO_LONG_TO_CONVERT}/retry", {}),
    ("POST", "/inbox/retry-all", {"through": TOO_LONG_TO_CONVERT}),
], ids=["inbox-before", "inbox-dead_after", "retry-all-after", "notification", "retry",
        "retry-all-through"])
def test_an_inbox_id_of_thousands_of_digits_is_no_server_error(config_path, method, path,
                                                               form):
    """A query value or path the page cannot use is named or answered 404/400, never a
    500: int() refuses to convert more than 4300 digits (ValueError), and both
    QueryReader.inbox_id and the ``{inbox_id:int}`` routes convert before any bound."""
    def calls(client: TestClient):
        client.get("/inbox")  # the CSRF cookie
        if form is None:
            return client.get(path)
        return client.post(path, data={"csrf": client.cookies["omgate_csrf"], **form},
                           follow_redirects=False)

    response = _with_client(config_path, calls)
    assert response.status_code < 500, (response.status_code, response.text[:200])


@pytest.mark.parametrize("path", ["/inbox/retry-all", "/inbox/1/retry"])
def test_a_csrf_field_that_is_not_ascii_is_refused_not_a_server_error(config_path, path):
    """csrf_matches hands both values to hmac.compare_digest as str, which raises TypeError
    for non-ASCII text: a form field ``csrf=%C3%A9`` (or a cookie holding a Latin-1 byte)
    is a 500 instead of the 403 any other mismatch gets."""
    def calls(client: TestClient):
        client.get("/inbox")  # the CSRF cookie
        return client.post(path, content=b"csrf=%C3%A9&through=1",
                           headers={"content-type": "application/x-www-form-urlencoded"},
                           follow_redirects=False)

    response = _with_client(config_path, calls)
    assert response.status_code == 403, (response.status_code, response.text[:200])


# -- 1b. a chain too large to be judged is parsed by the console anyway ------------------------

def _oversized_chain_with_an_unreadable_name() -> tuple[bytes, ...]:
    """A leaf whose subject does not parse (bytes that are no UTF-8 in a UTF8String), sent
    with a certificate that takes the chain past MAX_JUDGED_BYTES (32 KiB): the live path
    judges it unread (chain_too_costly), so nothing checks its names on the way in."""
    from tls_listener_cases import bulky_certificate

    leaf = issue(_cn("QQQQ")).certificate.public_bytes(Encoding.DER)
    return leaf.replace(b"QQQQ", b"\xff\xfe\xfd\xfc"), bulky_certificate(0, 33 * 1024)


@pytest.mark.parametrize("page", ["/chains", "/", "/chains/{key}"])
def test_a_chain_too_large_to_judge_does_not_break_the_console(config_path, page):
    """Any client may put such a chain in the registry (a handshake it abandons is recorded
    as unproven; in request mode one that carried a message is recorded whatever the
    budget). The console then builds its path and reads its leaf's names, which raises:
    /chains (every chain of the last 7 days), the overview (when it carried a message or
    was accepted) and the chain's own page answer 500 until retention removes it."""
    chain = _oversized_chain_with_an_unreadable_name()
    key = load_chain(list(chain)).sha256
    now = dt.datetime.now(dt.UTC)
    config = load_config(config_path, {})

    async def record() -> None:
        inbox = await open_inbox(config.inbox.url, group_commit=False)
        try:
            await inbox.record_chains([ChainSighting(key, chain, "tls", now, now, 1, 0, 1,
                                                     "203.0.113.9:40000", None, ())], [])
        finally:
            await inbox.close()

    asyncio.run(record())
    response = _with_client(config_path, lambda client: client.get(page.format(key=key)))
    assert response.status_code == 200, (response.status_code, response.text[:200])


# -- 2. a POST's whole body is parsed before its CSRF token is checked, with no bound ---------

def _post_streamed(config_path: Path, path: str, content_type: bytes, chunks: list[bytes],
                   cookie: bytes | None) -> tuple[int, int]:
    """POST ``chunks`` to the console as a server would hand them over; the status and how
    many body bytes the console pulled."""
    async def work(app) -> tuple[int, int]:
        pulled = 0
        queue = list(chunks)
        status: list[int] = []

        async def receive() -> dict[str, Any]:
            nonlocal pulled
            if not queue:
                return {"type": "http.disconnect"}
            chunk = queue.pop(0)
            pulled += len(chunk)
            return {"type": "http.request", "body": chunk, "more_body": bool(queue)}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        headers = [(b"host", b"127.0.0.1:8444"), (b"content-type", content_type),
                   (b"content-length", str(sum(map(len, chunks))).encode())]
        if cookie is not None:
            headers.append((b"cookie", cookie))
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                 "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(),
                 "query_string": b"", "root_path": "", "headers": headers,
                 "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8444)}
        await app(scope, receive, send)
        return status[0], pulled

    return _with_console(config_path, work)


MEBIBYTE = 1024 * 1024


def _multipart_file(size: int) -> tuple[bytes, list[bytes]]:
    boundary = b"b0undary"
    head = (b"--" + boundary + b"\r\nContent-Disposition: form-data; name=\"f\"; "
            b"filename=\"f\"\r\nContent-Type: application/octet-stream\r\n\r\n")
    tail = b"\r\n--" + boundary + b"--\r\n"
    body = [head] + [b"x" * (64 * 1024)] * (size // (64 * 1024)) + [tail]
    return b"multipart/form-data; boundary=" + boundary, body


def _urlencoded_fields(count: int, size: int) -> tuple[bytes, list[bytes]]:
    return b"application/x-www-form-urlencoded", [
        (b"&" if index else b"") + b"f%d=" % index + b"x" * size for index in range(count)]


@pytest.mark.parametrize("body", [
    pytest.param(_multipart_file(8 * MEBIBYTE), id="an 8 MiB file"),
    pytest.param(_urlencoded_fields(8, MEBIBYTE - 16), id="8 fields of 1 MiB"),
])
@pytest.mark.parametrize("path", ["/inbox/retry-all", "/inbox/1/retry"])
def test_a_post_without_a_csrf_cookie_is_refused_before_its_body_is_read(config_path, path,
                                                                         body):
    """Any web page the operator's browser shows may POST to a loopback console (and a
    browser adds the basic credentials it holds): the form is parsed whole, into memory
    (1000 fields of 1 MiB each) or spooled to disk (files of any size), before the CSRF
    token is compared, and nothing bounds a console request's body."""
    content_type, chunks = body
    status, pulled = _post_streamed(config_path, path, content_type, chunks, cookie=None)
    assert status in (400, 403, 413)
    assert pulled <= 64 * 1024, f"read {pulled:,} bytes of a request it refused ({status})"


# -- 3. double-submit CSRF with no origin check -------------------------------------------------

def test_a_post_from_another_origin_is_refused_even_with_a_cookie_it_set(config_path):
    """Cookies are not port-isolated and SameSite ignores ports: a page on any other
    localhost port (a dev server, a notebook, a page it serves) can set omgate_csrf for
    localhost and POST a form carrying the same value. The console accepts any value
    that equals its cookie (it never checks it issued it) and never looks at Origin or
    Sec-Fetch-Site, so that page retries every dead letter."""
    def calls(client: TestClient):
        client.cookies.set("omgate_csrf", "chosen-by-the-attacker", domain="127.0.0.1")
        return client.post("/inbox/retry-all", data={"csrf": "chosen-by-the-attacker",
                                                     "through": "1"},
                           headers={"origin": "http://127.0.0.1:3000",
                                    "sec-fetch-site": "same-site"},
                           follow_redirects=False)

    response = _with_client(config_path, calls)
    assert response.status_code == 403, response.status_code


# -- 4. refused and unproven chains can fill the pending table the sender's chain needs ---------

def test_a_flood_of_unproven_chains_cannot_keep_an_accepted_chain_out(tmp_path, monkeypatch):
    """README: refused chains cannot spend the reserved share, "so a flood of throw-away
    chains cannot hide the sender's renewed certificate". But every distinct chain, unproven
    ones included and whatever their budget said, takes one of the MAX_PENDING (10,000)
    places a worker holds between two flushes; once a flood took them, the accepted
    sender's chain gets none (budget "pending") and its sighting is dropped, at every flush
    the flood keeps up with (2,000 throw-away handshakes a second a worker)."""
    monkeypatch.setattr(registry_module, "MAX_PENDING", 8)
    key = new_key()
    sender = issue(_cn("renewed sender")).certificate

    async def run() -> list[str]:
        inbox = await open_inbox(f"sqlite:///{tmp_path / 'inbox.db'}", group_commit=False)
        registry = ChainRegistry(ChainsConfig(max_new_per_hour=1000), {LISTENER: "f" * 64})
        try:
            for index in range(8):  # handshakes abandoned before CertificateVerify
                identity = ClientIdentity((issue(_cn(f"flood {index}"), key=key).certificate,),
                                          "tls", f"198.51.100.{index}:40000")
                registry.decided(RecordedDecision(identity, REFUSED, "unproven",
                                                  dt.datetime.now(dt.UTC)))
            registry.decided(RecordedDecision(ClientIdentity((sender,), "tls", "10.0.0.2:1"),
                                              ACCEPTED, "accept", dt.datetime.now(dt.UTC)))
            await registry.flush(inbox)
            records = await inbox.chains(since=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1),
                                         limit=100)
            return [record.chain_sha256 for record in records]
        finally:
            await inbox.close()

    recorded = asyncio.run(run())
    assert ClientIdentity((sender,), "tls", None).chain_sha256 in recorded, (
        f"{len(recorded)} flood chains recorded, the accepted sender's not")


@pytest.mark.parametrize("headers, own", [
    ({"host": "127.0.0.1:8444"}, True),  # curl, a script: the CSRF token decides
    ({"host": "127.0.0.1:8444", "origin": "null", "sec-fetch-site": "same-origin"}, True),
    ({"host": "127.0.0.1:8444", "origin": "https://127.0.0.1:8444"}, True),  # a TLS proxy
    ({"host": "127.0.0.1:8444", "origin": "http://127.0.0.1:3000"}, False),
    ({"host": "127.0.0.1:8444", "origin": "null", "sec-fetch-site": "cross-site"}, False),
    ({"host": "127.0.0.1:8444", "sec-fetch-site": "same-site"}, False),  # another port
])
def test_a_post_is_from_the_consoles_own_pages_only_when_the_browser_says_so(headers, own):
    """The console's pages are served with no-referrer: Chromium then sends Origin: null
    from them, and Sec-Fetch-Site says where the form was."""
    from service.console.auth import from_own_pages

    assert from_own_pages(headers) is own
