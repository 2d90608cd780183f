"""The chain observatory against what any client may put in a certificate or do with one:
names that are markup or terminal escapes, keys built to cost CPU, a flood of chains that
spends the hourly budget of new chains, and the real sender's public chain replayed by a
client without its key."""

from __future__ import annotations

import asyncio
import datetime as dt
import tomllib
from pathlib import Path

import pytest
from costly_chains import SIGNER, huge_rsa_key, junk_cas
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from harness import ROOT, run_omgate
from httpx import Response
from starlette.testclient import TestClient

from service.clientauth import ClientIdentity
from service.clientauth.model import Decision, Outcome
from service.config import ChainsConfig, load_config
from service.console.app import build_console
from service.console.report import standalone_report
from service.gate import RecordedDecision, Verdict
from service.inbox import open_inbox
from service.inbox.chains import LISTENER, ChainRecord, ChainSighting
from service.metrics import Metrics
from service.observatory import budgets, picture, views
from service.observatory.registry import ChainRegistry
from service.policy_loader import PolicyLoader
from service.tools.pki import build_dev_pki, dev_files, issue, new_key

NOW = dt.datetime.now(dt.UTC)
MARKUP = "x<meta http-equiv=refresh content='0 url=http://127.0.0.1:9/phish'><a href=/x>link</a>"
ESCAPES = "evil\x1b]0;PWNED\x07\x1b[2J\u202e\x9b2J\nmode = \"off\""


def _cn(text: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text, _validate=False)])


@pytest.fixture
def setup(tmp_path: Path):
    """A configuration trusting its own client CA, and an empty SQLite inbox."""
    pki = build_dev_pki()
    for filename, content in dev_files(pki).items():
        (tmp_path / filename).write_bytes(content)
    config_path = tmp_path / "omgate.toml"
    config_path.write_text(f"""
[server]
certfile = "server.pem"
keyfile = "server.key"
[client_auth]
mode = "request"
trust = ["client-ca.pem"]
[inbox]
url = "sqlite:///{tmp_path / 'inbox.db'}"
""")
    return pki, config_path


def _record(config_path: Path, certificates: list[x509.Certificate], messages: int = 0) -> str:
    """Records one presented chain, as a worker's flush does; returns its key."""
    identity = ClientIdentity(tuple(certificates), "tls", "127.0.0.1")
    sighting = ChainSighting(
        identity.chain_sha256, tuple(c.public_bytes(Encoding.DER) for c in certificates),
        "tls", NOW, NOW, 1, 0, messages, "127.0.0.1", None, ())
    config = load_config(config_path, {})

    async def record() -> None:
        inbox = await open_inbox(config.inbox.url, group_commit=False)
        try:
            await inbox.record_chains([sighting], [])
        finally:
            await inbox.close()

    asyncio.run(record())
    return identity.chain_sha256


def _console_get(config_path: Path, path: str, host: str = "127.0.0.1",
                 cookie: str | None = None) -> Response:
    """One GET from the console a configuration serves (no token), as ``host`` names it
    (with a ``cookie`` header, when given)."""
    config = load_config(config_path, {})

    async def fetch() -> Response:
        inbox = await open_inbox(config.inbox.url, group_commit=False)
        try:
            loader = PolicyLoader(config)
            policy = loader.policy(config.client_auth.rules)
            require = loader.policy(config.client_auth.rules, mode="require")
            app = build_console(config, inbox, policy, require, token=None)
            with TestClient(app, base_url="http://127.0.0.1") as client:
                headers = {"host": host, **({"cookie": cookie} if cookie else {})}
                return await asyncio.to_thread(client.get, path, headers=headers)
        finally:
            await inbox.close()

    return asyncio.run(fetch())


def _console_page(config_path: Path, path: str, cookie: str | None = None) -> str:
    response = _console_get(config_path, path, cookie=cookie)
    assert response.status_code == 200, response.text
    return response.text


def _assert_text(page: str) -> None:
    """MARKUP is shown as text, never as markup."""
    assert "<meta http-equiv=refresh" not in page and "<a href=/x>" not in page
    assert "&lt;meta http-equiv=refresh" in page


def test_a_certificate_name_is_text_in_the_console_and_the_report(setup):
    """A CN holding markup (a meta refresh, a link) is shown as text: the chain picture is
    SVG, a template the console must escape as it escapes its HTML."""
    pki, config_path = setup
    leaf = issue(_cn(MARKUP), issuer=pki.client_intermediate).certificate
    key = _record(config_path, [leaf, pki.client_intermediate.certificate])
    config = load_config(config_path, {})
    config_load = asyncio.run(_records(config.inbox.url))
    report = standalone_report(config, config_load[0], NOW)
    for page in (report, _console_page(config_path, f"/chains/{key}"),
                 _console_page(config_path, "/chains")):
        _assert_text(page)
    # the report's own stylesheet is inline as it is (escaped, its quoted selectors and
    # strings were dropped by the browser)
    stylesheet = (ROOT / "service" / "console" / "static" / "console.css").read_text()
    assert f"<style>{stylesheet}</style>" in report


def test_a_senders_certificate_name_is_text_on_its_timeline(setup):
    """The timeline of certificate expiry is SVG drawn from what the sender's chain says:
    its name is escaped there as on every page."""
    pki, config_path = setup
    leaf = issue(_cn(MARKUP), issuer=pki.client_intermediate).certificate
    _record(config_path, [leaf, pki.client_intermediate.certificate], messages=1)
    page = _console_page(config_path, "/")
    assert 'class="expiry-timeline"' in page
    _assert_text(page)


def test_what_a_notification_says_is_text_on_its_page(setup):
    """Field values are whatever the sender wrote: the notification's page shows them as
    text, in its fields table and among its conflicting redeliveries."""
    _pki, config_path = setup
    from messages import envelope, notification

    from service.inbox import IncomingMessage
    from service.soap import parse_message

    def stored(value: str) -> IncomingMessage:
        escaped = value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        body = envelope(notification(fields=f"<sf:Name>{escaped}</sf:Name>"))
        return IncomingMessage(parse_message(body), "/salesforce/outbound", NOW)

    async def store() -> int:
        inbox = await open_inbox(load_config(config_path, {}).inbox.url, group_commit=False)
        try:
            await inbox.store(stored(MARKUP))
            await inbox.store(stored(MARKUP + " again"))  # a conflicting redelivery
            [item] = await inbox.list(limit=1)
            return item.id
        finally:
            await inbox.close()

    inbox_id = asyncio.run(store())
    page = _console_page(config_path, f"/inbox/{inbox_id}")
    assert "Redeliveries that said something else" in page
    _assert_text(page)
    assert page.count("&lt;meta http-equiv=refresh") == 2


def test_a_query_value_named_back_to_the_operator_is_text(setup):
    page = _console_page(config_path=setup[1], path=f"/chains?since={MARKUP}")
    assert 'class="problem"' in page
    _assert_text(page)


@pytest.mark.parametrize("cookie", [
    "omgate_notice=retried:<b>1</b>", "omgate_notice=retried-all:12345678901234567890",
    'omgate_notice="retried:1 <script>"', "omgate_notice=deleted-all:3"])
def test_a_notice_cookie_says_nothing_it_was_not_made_to_say(setup, cookie):
    """The notice an action leaves is a cookie: the page shows the numbers it parses from
    it in sentences of its own, and nothing of a cookie it did not write."""
    page = _console_page(setup[1], "/inbox", cookie=cookie)
    assert 'class="notice"' not in page and "<b>1" not in page and "<script>" not in page
    assert 'class="notice"' in _console_page(setup[1], "/inbox",
                                            cookie="omgate_notice=retried-all:3")


async def _records(url: str):
    inbox = await open_inbox(url, group_commit=False)
    try:
        return await inbox.chains(since=NOW - dt.timedelta(days=1), limit=10)
    finally:
        await inbox.close()


def test_a_chain_built_to_cost_cpu_is_shown_without_checking_a_signature(setup,
                                                                         monkeypatch):
    """Keys the live path refuses before any signature check (unsupported_key) are not
    checked when the chain is listed or drawn either: one console page would otherwise
    hold the event loop Salesforce's messages are served on for seconds."""
    _pki, config_path = setup
    huge = huge_rsa_key()
    leaf = (x509.CertificateBuilder().subject_name(_cn("costly.client.test"))
            .issuer_name(_cn("costly CA")).public_key(huge)
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - dt.timedelta(days=1))
            .not_valid_after(NOW + dt.timedelta(days=30))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
            .sign(SIGNER, hashes.SHA256()))
    key = _record(config_path, [leaf, *junk_cas(6, _cn("costly CA"), key=huge)])

    def no_signature_checks(*_args, **_kwargs):
        raise AssertionError("a chain with a costly key was analysed")

    monkeypatch.setattr(views, "analyse_chain", no_signature_checks)
    monkeypatch.setattr(picture, "analyse_chain", no_signature_checks)
    assert "costly.client.test" in _console_page(config_path, "/chains")
    assert "unsupported_key" in _console_page(config_path, f"/chains/{key}")


def test_names_are_escaped_in_chains_list_simulate_and_pin(setup):
    """Terminal escapes and bidi controls in a DN never reach the terminal raw, and a line
    break in a CN cannot add a line to the configuration `chains pin` prints."""
    pki, config_path = setup
    leaf = issue(_cn(ESCAPES), issuer=pki.client_intermediate,
                 usages=(ExtendedKeyUsageOID.CLIENT_AUTH,)).certificate
    key = _record(config_path, [leaf, pki.client_intermediate.certificate])
    for command in (("list",), ("simulate", "--mode", "require"), ("pin", key[:16])):
        result = run_omgate("chains", *command, "--config", str(config_path))
        assert result.returncode in (0, 1), result.stderr
        raw = [c for c in result.stdout if c in "\x1b\x07\x9b\u202e"]
        assert not raw, (command, result.stdout)
        if command[0] == "pin":
            assert result.returncode == 0, result.stdout + result.stderr
            pinned = tomllib.loads(result.stdout)["client_auth"]
            assert "mode" not in pinned or pinned["mode"] != "off"


REFUSED = Verdict(Decision("reject", ()), "request", False)
ACCEPTED = Verdict(Decision("accept", ()), "require", True)
SENDER, SENDERS_PROXY, ATTACKER = "10.0.0.2:41000", "192.0.2.10:443", "203.0.113.9:52000"


def _decided(registry: ChainRegistry, identity: ClientIdentity, verdict: Verdict,
             outcome: Outcome, proxy: str | None = None) -> None:
    registry.decided(RecordedDecision(identity, verdict, outcome, dt.datetime.now(dt.UTC),
                                      proxy=proxy))


def _observe(registry: ChainRegistry, certificate: x509.Certificate,
             peer: str = "10.0.0.1") -> ClientIdentity:
    identity = ClientIdentity((certificate,), "tls", peer)
    _decided(registry, identity, REFUSED, "reject")
    return identity


def _accept(registry: ChainRegistry, certificate: x509.Certificate,
            peer: str = SENDER) -> ClientIdentity:
    identity = ClientIdentity((certificate,), "tls", peer)
    _decided(registry, identity, ACCEPTED, "accept")
    return identity


def _prove(registry: ChainRegistry, chain: tuple[x509.Certificate, ...]) -> None:
    """The real sender, behind its proxy that forwards the chain it proved."""
    _decided(registry, ClientIdentity(chain, "forwarded", SENDER), ACCEPTED, "accept",
             proxy=SENDERS_PROXY)


def _replay(registry: ChainRegistry, chain: tuple[x509.Certificate, ...]) -> None:
    """An attacker presenting the sender's public chain over TLS, without its key: the
    handshake fails (the policy would have accepted the chain)."""
    _decided(registry, ClientIdentity(chain, "tls", ATTACKER), ACCEPTED, "unproven")


@pytest.fixture(params=["sqlite", "postgresql"])
def inbox_url(request, tmp_path: Path) -> str:
    if request.param == "postgresql":
        return request.getfixturevalue("postgres").new_database()
    return f"sqlite:///{tmp_path / 'inbox.db'}"


def _records_after(url: str, work, *, max_new_per_hour: int = 1000, workers: int = 1,
                   metrics: Metrics | None = None) -> list[ChainRecord]:
    """What the registry holds after ``work(registries, inbox)``: ``workers`` registries
    (one per worker process) sharing one inbox."""

    async def run() -> list[ChainRecord]:
        inbox = await open_inbox(url, group_commit=False)
        registries = [ChainRegistry(ChainsConfig(max_new_per_hour=max_new_per_hour),
                                    {LISTENER: "f" * 64}, metrics) for _ in range(workers)]
        try:
            await work(registries, inbox)
            return await inbox.chains(since=NOW - dt.timedelta(days=1), limit=1000)
        finally:
            await inbox.close()

    return asyncio.run(run())


def _recorded_with(tmp_path: Path, max_new_per_hour: int, work) -> list[str]:
    """The keys a registry with that budget recorded after ``work(registry, inbox)``."""

    async def one(registries: list[ChainRegistry], inbox) -> None:
        await work(registries[0], inbox)

    return [record.chain_sha256 for record in _records_after(
        f"sqlite:///{tmp_path / 'inbox.db'}", one, max_new_per_hour=max_new_per_hour)]


async def _pause() -> dt.datetime:
    """A moment strictly between what was observed before and what is observed after."""
    await asyncio.sleep(0.002)
    moment = dt.datetime.now(dt.UTC)
    await asyncio.sleep(0.002)
    return moment


def test_a_chain_first_seen_while_the_hourly_budget_is_spent_is_recorded_later(tmp_path):
    """A flood of new chains spends the hour's budget just as the sender renews its
    certificate: the sender's chain is recorded as soon as the budget allows."""
    sender = issue(_cn("renewed sender")).certificate
    keys: list[str] = []

    async def work(registry: ChainRegistry, inbox) -> None:
        for index in range(2):
            _observe(registry, issue(_cn(f"flood {index}")).certificate, f"10.0.1.{index}")
        keys.append(_observe(registry, sender, "10.0.0.2").chain_sha256)
        await registry.flush(inbox)
        registry.budgets._window_start -= dt.timedelta(hours=2)  # the next hour
        _observe(registry, sender, "10.0.0.2")
        await registry.flush(inbox)

    recorded = _recorded_with(tmp_path, 2, work)
    assert len([key for key in recorded if key == keys[0]]) == 1


@pytest.mark.parametrize("since", ["800000d", "99999999999d"])
def test_a_window_beyond_the_calendar_is_a_usage_error(setup, since):
    _pki, config_path = setup
    result = run_omgate("chains", "list", "--since", since, "--config", str(config_path))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "since" in _console_page(config_path, f"/chains?since={since}")


@pytest.mark.parametrize(("host", "answered"), [
    ("127.0.0.1:8470", True), ("localhost", True), ("[::1]:8470", True),
    ("attacker.example:8470", False), ("127.0.0.1.attacker.example", False)])
def test_a_console_without_a_token_answers_only_to_a_loopback_host(setup, host, answered):
    """A page on a name re-pointed at 127.0.0.1 (DNS rebinding) must not read the console
    that needs no token because it listens on loopback."""
    _pki, config_path = setup
    assert (_console_get(config_path, "/chains", host).status_code == 200) is answered


def test_a_console_token_from_the_environment_is_held_to_the_same_length(setup,
                                                                      monkeypatch):
    from service.config import ConfigError
    from service.console.auth import TOKEN_VARIABLE, console_token

    _pki, config_path = setup
    monkeypatch.setenv(TOKEN_VARIABLE, "short")
    with pytest.raises(ConfigError, match="fewer than 16"):
        console_token(load_config(config_path, {}))


def test_large_chains_spend_the_hourly_budget_by_their_size(tmp_path):
    """The registry's disk use is bounded by the hour's budget in bytes too: a chain counts
    once for every started 16 KiB, so 60 KiB chains spend four times what a real sender's
    does, and the budget of 4 records one such chain, not four."""
    from tls_listener_cases import bulky_certificate

    async def work(registry: ChainRegistry, inbox) -> None:
        for index in range(4):
            _observe(registry, x509.load_der_x509_certificate(
                bulky_certificate(index, 60_000)), f"10.0.1.{index}")
        await registry.flush(inbox)

    assert len(_recorded_with(tmp_path, 4, work)) == 1


def test_the_console_says_when_newer_chains_push_older_ones_out_of_its_view(setup,
                                                                          monkeypatch):
    """The console reads the chains seen most recently (500); a flood of newer chains must
    not make an accepted sender silently vanish from a filtered view or the overview."""
    from service.console import app as console_app
    from service.inbox.chains import EndpointDecision, EndpointSeen

    pki, config_path = setup
    monkeypatch.setattr(console_app, "CHAINS_SHOWN", 2)
    accepted = EndpointSeen(LISTENER, 1, EndpointDecision("accept", True, "require", (),
                                                          "f" * 64, NOW))
    config = load_config(config_path, {})
    sightings = []
    for index, endpoints in enumerate(((accepted,), (), ())):
        leaf = issue(_cn(f"chain {index}"), issuer=pki.client_intermediate).certificate
        identity = ClientIdentity((leaf,), "tls", "127.0.0.1")
        seen = NOW + dt.timedelta(seconds=index)
        sightings.append(ChainSighting(identity.chain_sha256, (leaf.public_bytes(Encoding.DER),),
                                       "tls", seen, seen, 1, 0, 1, "127.0.0.1", None, endpoints))

    async def record() -> None:
        inbox = await open_inbox(config.inbox.url, group_commit=False)
        try:
            await inbox.record_chains(sightings, [])
        finally:
            await inbox.close()

    asyncio.run(record())
    assert "read every chain" in _console_page(config_path, "/chains?outcome=accept")
    assert "2 chains seen most recently" in _console_page(config_path, "/")


def test_the_chart_of_decisions_reads_a_bounded_number_of_hours_and_says_so(setup,
                                                                         monkeypatch):
    """Hourly counts are one row an hour, endpoint and outcome: the chart reads at most
    HOUR_ROWS of them, the latest, and says when there were more."""
    from service.console import app as console_app
    from service.inbox.chains import HourCount

    _pki, config_path = setup
    monkeypatch.setattr(console_app, "HOUR_ROWS", 2)
    hour = NOW.replace(minute=0, second=0, microsecond=0)

    async def record() -> None:
        inbox = await open_inbox(load_config(config_path, {}).inbox.url, group_commit=False)
        try:
            await inbox.record_chains([], [HourCount(hour - dt.timedelta(hours=back), LISTENER,
                                                     "accept", 1) for back in range(3)])
        finally:
            await inbox.close()

    asyncio.run(record())
    page = _console_page(config_path, "/")
    assert "the oldest are left out" in page
    assert 'data-accept="1"' in page and page.count('data-accept="1"') == 2  # the latest two


# -- the sender's chain replayed without its key (issue 22, item 11) ---------------------

WHERE = ["same flush", "next flush", "another worker"]


@pytest.mark.parametrize("replayed", WHERE)
def test_replaying_the_senders_chain_without_its_key_moves_only_its_unproven_count(
        inbox_url, replayed):
    """The sender's chain is public. A client replaying it fails the handshake: the record
    must not then say the sender was last seen now, from the attacker's address, over
    another way in; the replay counts as unproven and nothing else. In one worker's counts
    (the same flush), added to a row this worker wrote (the next flush), and added by a
    worker that never saw the chain (its statement inserts or adds)."""
    chain = (issue(_cn("sender")).certificate,)
    moments: list[dt.datetime] = []

    async def work(workers: list[ChainRegistry], inbox) -> None:
        first, other = workers
        _prove(first, chain)
        if replayed != "same flush":
            await first.flush(inbox)
        moments.append(await _pause())
        _replay(other if replayed == "another worker" else first, chain)
        for worker in workers:
            await worker.flush(inbox)

    [record] = _records_after(inbox_url, work, workers=2)
    assert (record.connections, record.unproven) == (1, 1)
    assert (record.source, record.last_peer, record.last_proxy) == (
        "forwarded", SENDER, SENDERS_PROXY)
    assert record.first_seen < moments[0] and record.last_seen < moments[0]
    assert record.outcome == "accept"


@pytest.mark.parametrize("proven", WHERE)
def test_a_chain_seen_only_unproven_is_listed_until_its_sender_proves_it(inbox_url, proven):
    """A chain never proven is still recorded, so the operator sees it, as unproven and
    with what its unproven sightings say; the first proven connection replaces all of it
    (when and how the sender was first and last seen, from where)."""
    chain = (issue(_cn("renewed sender")).certificate,)
    moments: list[dt.datetime] = []
    before_proof: list[ChainRecord] = []

    async def work(workers: list[ChainRegistry], inbox) -> None:
        first, other = workers
        _replay(first, chain)
        if proven != "same flush":
            await first.flush(inbox)
            before_proof.extend(await inbox.chains(since=NOW - dt.timedelta(days=1),
                                                   limit=10))
        moments.append(await _pause())
        _prove(other if proven == "another worker" else first, chain)
        for worker in workers:
            await worker.flush(inbox)

    [record] = _records_after(inbox_url, work, workers=2)
    if before_proof:
        [unproven] = before_proof
        assert (unproven.connections, unproven.unproven, unproven.outcome) == (
            0, 1, "unproven")
        assert (unproven.source, unproven.last_peer) == ("tls", ATTACKER)
    assert (record.connections, record.unproven, record.outcome) == (1, 1, "accept")
    assert (record.source, record.last_peer, record.last_proxy) == (
        "forwarded", SENDER, SENDERS_PROXY)
    assert record.first_seen > moments[0] and record.last_seen > moments[0]


# -- budgets: refused chains cannot starve the sender's (issue 22, item 12) ---------------

THROW_AWAY_KEY = new_key()


def _throw_away(index: int) -> x509.Certificate:
    """A self-signed chain made for one handshake."""
    return issue(_cn(f"throw-away {index}"), key=THROW_AWAY_KEY).certificate


def test_refused_chains_cannot_keep_the_senders_new_chain_out(tmp_path):
    """Throw-away self-signed chains, refused or unproven, from many addresses spend the
    hour's budget of new chains; the sender's new chain after its certificate rotation is
    accepted, exactly when the operator looks at the console: it must be recorded."""
    sender = issue(_cn("rotated sender")).certificate
    keys: list[str] = []

    async def work(registry: ChainRegistry, inbox) -> None:
        for index in range(30):
            _observe(registry, _throw_away(index), f"198.51.100.{index}:40000")
        _decided(registry, ClientIdentity((_throw_away(30),), "tls", ATTACKER), ACCEPTED,
                 "unproven")
        keys.append(_accept(registry, sender).chain_sha256)
        await registry.flush(inbox)

    recorded = _recorded_with(tmp_path, 10, work)
    assert keys[0] in recorded
    assert len(recorded) == 11  # the hour's ten refused chains, and the sender's


def test_one_client_address_records_only_its_share_of_refused_chains(tmp_path):
    """One address (an IPv6 client: its /64) records a tenth of the hour's budget of refused
    chains, so others still find room."""
    keys: dict[str, list[str]] = {"one": [], "ipv6": [], "other": []}

    async def work(registry: ChainRegistry, inbox) -> None:
        for index in range(10):
            keys["one"].append(_observe(registry, _throw_away(index),
                                        f"203.0.113.9:{40000 + index}").chain_sha256)
            keys["ipv6"].append(_observe(registry, _throw_away(100 + index),
                                         f"[2001:db8::{index + 1}]:40000").chain_sha256)
        keys["other"].append(_observe(registry, _throw_away(200), "198.51.100.7:40000")
                             .chain_sha256)
        await registry.flush(inbox)

    recorded = set(_recorded_with(tmp_path, 20, work))
    assert [len(recorded & set(sent)) for sent in keys.values()] == [2, 2, 1]


def test_a_refused_chain_that_carried_a_message_is_recorded_whatever_the_budget(tmp_path):
    """Request mode stores messages from chains it would refuse: a chain that carried one
    is recorded even when the hour's budget is spent (0 here), like an accepted one."""
    refused, accepted, quiet = (_throw_away(index) for index in range(3))

    async def work(registry: ChainRegistry, inbox) -> None:
        carrier = _observe(registry, refused)
        await registry.flush(inbox)
        registry.message(carrier, "/salesforce/outbound")  # a message after a flush
        _accept(registry, accepted)
        _observe(registry, quiet)
        await registry.flush(inbox)

    recorded = _records_after(f"sqlite:///{tmp_path / 'inbox.db'}",
                              lambda registries, inbox: work(registries[0], inbox),
                              max_new_per_hour=0)
    by_key = {record.chain_sha256: record for record in recorded}
    carrier_key = ClientIdentity((refused,), "tls", None).chain_sha256
    assert set(by_key) == {carrier_key, ClientIdentity((accepted,), "tls", None).chain_sha256}
    assert by_key[carrier_key].messages == 1


def test_the_budgets_of_client_addresses_are_bounded_in_number(tmp_path, monkeypatch):
    """An attacker with many addresses does not grow the table of what each address spent
    without limit (the oldest are forgotten; the hour's budget still bounds them all)."""
    monkeypatch.setattr(budgets, "CLIENT_BUDGETS_KEPT", 8)
    held: list[int] = []

    async def work(registry: ChainRegistry, inbox) -> None:
        for index in range(50):
            _observe(registry, _throw_away(index), f"198.51.100.{index}:40000")
            held.append(registry.budgets.clients_held)
        await registry.flush(inbox)

    assert len(_recorded_with(tmp_path, 10_000, work)) == 50
    assert max(held) == 8


def test_accepted_chains_are_recorded_up_to_a_hard_ceiling(tmp_path, monkeypatch):
    """The reserved share of accepted chains and chains that carried a message has a
    ceiling of its own (far above the budget) against memory and disk exhaustion; what it
    keeps out is counted under its own label."""
    monkeypatch.setattr(budgets, "RESERVED_PER_HOUR", 3)
    metrics = Metrics()

    async def work(registries: list[ChainRegistry], inbox) -> None:
        for index in range(5):
            _accept(registries[0], _throw_away(index))
        await registries[0].flush(inbox)

    recorded = _records_after(f"sqlite:///{tmp_path / 'inbox.db'}", work, metrics=metrics)
    assert len(recorded) == 3
    assert metrics.registry.get_sample_value("omgate_chains_not_recorded_total",
                                             {"budget": "reserved"}) == 2
