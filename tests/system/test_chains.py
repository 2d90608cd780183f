"""The chain observatory from the command line: `omgate chains list|show|simulate|pin`
after real clients presented real chains to a real omgate, on SQLite and on PostgreSQL;
and what a client that floods it with chains, or replays the sender's, can change there."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import time
from pathlib import Path

import httpx
import pytest
from client_pki import _write
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from harness import merge, run_omgate, to_toml
from observatory import (
    BODY,
    MIXED_RUN,
    chains_json,
    mixed_cases,
    pin_table,
    send_mixed_run,
)

from service.inbox import open_inbox
from service.inbox.chains import ChainSighting
from service.tools.pki import issue, name, new_key


def _candidate(server_config: Path, folder: Path, name: str, client_auth: dict) -> Path:
    """The running server's configuration with other [client_auth] rules."""
    import tomllib

    document = tomllib.loads(server_config.read_text())
    document = merge(document, {"client_auth": {**document.get("client_auth", {}),
                                                **client_auth}})
    path = folder / name
    path.write_text(to_toml(document))
    return path


@pytest.fixture
def mixed(omgate_server, client_pki, tmp_path):
    """A request-mode server after the mixed run, stopped (so everything is flushed)."""
    run = mixed_cases(client_pki, tmp_path / "cases")
    server = omgate_server({"client_auth": {"mode": "request"}})
    send_mixed_run(server, run)
    assert server.stop() == 0
    return server, run


def test_each_chain_is_listed_once_with_its_counts(mixed):
    server, run = mixed
    listed = {item["chain_sha256"]: item for item in chains_json(server.config_path)}
    assert set(listed) == {run.key(label) for label in MIXED_RUN}
    expected_outcomes = {"valid": "accept", "misordered": "accept", "expired": "would_reject",
                         "untrusted": "would_reject", None: "would_reject"}
    for label, count in MIXED_RUN.items():
        item = listed[run.key(label)]
        assert (item["connections"], item["messages"], item["unproven"]) == (count, count, 0)
        assert item["outcome"] == expected_outcomes[label], (label, item)
        assert item["source"] == "tls"
    assert listed[run.key("expired")]["main_finding"]["code"] == "expired"
    assert listed[run.key("misordered")]["main_finding"]["code"] == "chain_out_of_order"
    assert listed[run.key(None)]["main_finding"]["code"] == "no_client_cert"
    assert listed[run.key("valid")]["leaf_subject"].startswith("CN=valid.client.test")
    assert listed[run.key("valid")]["days_left"] > 300

    refused = chains_json(server.config_path, "--outcome", "would_reject")
    assert {item["chain_sha256"] for item in refused} == {
        run.key("expired"), run.key("untrusted"), run.key(None)}
    assert chains_json(server.config_path, "--endpoint", "/elsewhere") == []
    assert len(chains_json(server.config_path, "--endpoint", "/salesforce/outbound")) == 5

    text = run_omgate("chains", "list", "--config", str(server.config_path))
    assert text.returncode == 0
    assert run.key("valid")[:12] in text.stdout and "5 chains seen" in text.stdout
    # an expired leaf is said as such, never "expires in -5 days"
    assert re.search(r"\n  validity expired \d+ days? ago\n", text.stdout), text.stdout
    assert re.search(r"\n  validity \d+ days left\n", text.stdout), text.stdout
    assert "in -" not in text.stdout and "-1 days" not in text.stdout


def test_simulate_reports_exactly_what_require_would_refuse_and_pins_admit_one(mixed,
                                                                             tmp_path):
    server, run = mixed
    result = run_omgate("chains", "simulate", "--config", str(server.config_path),
                        "--mode", "require")
    assert result.returncode == 1, result.stdout + result.stderr
    refused = {line.split()[1] for line in result.stdout.splitlines()
               if line.startswith("REFUSED")}
    assert refused == {run.key(label)[:12] for label in ("expired", "untrusted", None)}
    accepted = {line.split()[1] for line in result.stdout.splitlines()
                if line.startswith("accepted")}
    assert accepted == {run.key(label)[:12] for label in ("valid", "misordered")}
    assert "would have been refused: 3 chains (5 connections, 5 messages)" in result.stdout

    # the registry's policy as it is (request mode) refuses nothing: a deploy may go on
    assert run_omgate("chains", "simulate", "--config",
                      str(server.config_path)).returncode == 0

    lines = pin_table(server.config_path, run.key("valid")[:10])
    assert lines["pins"] == [f"sha256:{run.leaf_sha256('valid')}", lines["pins"][1]]
    assert lines["pins"][1].startswith("spki:")
    assert lines["allowed_names"] == ["valid.client.test"]
    pinned = _candidate(server.config_path, tmp_path, "pinned.toml",
                        {**lines, "mode": "require"})
    result = run_omgate("chains", "simulate", "--config", str(pinned))
    assert result.returncode == 1
    accepted = {line.split()[1] for line in result.stdout.splitlines()
                if line.startswith("accepted")}
    assert accepted == {run.key("valid")[:12]}
    assert "would have been refused: 4 chains" in result.stdout
    assert "pin_mismatch" in result.stdout  # the misordered chain's own leaf


def test_pin_refuses_a_chain_with_an_error(mixed):
    server, run = mixed
    result = run_omgate("chains", "pin", run.key("expired")[:12], "--config",
                        str(server.config_path))
    assert result.returncode == 1
    assert result.stdout == ""
    assert "expired" in result.stderr and "never suggests pinning" in result.stderr


def test_show_says_what_inspect_says_and_where_the_chain_was_seen(mixed, tmp_path):
    server, run = mixed
    prefix = run.key("misordered")[:8]
    shown = run_omgate("chains", "show", prefix, "--config", str(server.config_path))
    assert shown.returncode == 0, shown.stderr
    assert "chain_out_of_order" in shown.stdout and "root_included" in shown.stdout
    assert "1 connections, 1 messages" in shown.stdout
    assert "/salesforce/outbound: 1 messages" in shown.stdout

    pem = run_omgate("chains", "show", prefix, "--pem", "--config", str(server.config_path))
    chain_file = tmp_path / "chain.pem"
    chain_file.write_text(pem.stdout)
    inspected = run_omgate("inspect", str(chain_file), "--config", str(server.config_path))
    assert "warn  chain_out_of_order" in inspected.stdout
    assert [line for line in inspected.stdout.splitlines() if line.startswith(
        ("ERROR", "warn"))] == [line for line in shown.stdout.splitlines()
                                if line.startswith(("ERROR", "warn"))]

    assert run_omgate("chains", "show", "ffffffff", "--config",
                      str(server.config_path)).returncode == 1
    assert run_omgate("chains", "show", "xyz", "--config",
                      str(server.config_path)).returncode == 2


def test_two_replicas_on_one_postgresql_inbox_keep_one_registry(omgate_server, client_pki,
                                                                postgres, tmp_path):
    url = postgres.new_database()
    run = mixed_cases(client_pki, tmp_path / "cases")
    replicas = [omgate_server({"inbox": {"url": url}, "client_auth": {"mode": "request"}})
                for _ in range(2)]
    send_mixed_run(replicas[0], run, {"valid": 2, "expired": 1})
    send_mixed_run(replicas[1], run, {"valid": 3, None: 1})
    for replica in replicas:
        assert replica.stop() == 0
    listed = {item["chain_sha256"]: item for item in chains_json(replicas[0].config_path)}
    assert set(listed) == {run.key("valid"), run.key("expired"), run.key(None)}
    assert listed[run.key("valid")]["connections"] == 5
    assert listed[run.key("valid")]["messages"] == 5
    assert listed[run.key("expired")]["connections"] == 1
    assert listed[run.key(None)]["connections"] == 1


def _metrics_once_they_say(server, line: str, timeout: float = 20) -> str:
    """The server's metrics as soon as they hold ``line`` (the registry flushes every 5 s),
    else after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        text = httpx.get(f"http://127.0.0.1:{server.extra['health_port']}/metrics").text
        if line in text or time.monotonic() > deadline:
            return text
        time.sleep(0.2)


def test_a_flood_of_refused_chains_cannot_keep_the_senders_new_chain_out(omgate_server,
                                                                         client_pki,
                                                                         tmp_path):
    """Throw-away self-signed chains, refused, spend the hour's budget of new chains just
    before the sender's renewed chain arrives: that chain is accepted and must be recorded
    (the console is where the operator looks then). One client address records only its
    share of refused chains (a tenth of the budget, at least one)."""
    server = omgate_server({"chains": {"max_new_per_hour": 2},
                            "client_auth": {"mode": "require"}})
    key = new_key()
    flood = [_write(tmp_path / "flood", f"throw-away-{index}",
                    issue(name(f"throw-away {index}"), key=key,
                          usages=(ExtendedKeyUsageOID.CLIENT_AUTH,)))
             for index in range(3)]
    for case in flood:
        assert server.post(BODY, cert=case).status_code == 403
    run = mixed_cases(client_pki, tmp_path / "cases")
    send_mixed_run(server, run, {"valid": 2})
    not_recorded = 'omgate_chains_not_recorded_total{budget="client"} 2.0'
    metrics = _metrics_once_they_say(server, not_recorded)
    assert server.stop() == 0
    listed = {item["chain_sha256"]: item for item in chains_json(server.config_path)}
    assert run.key("valid") in listed and len(listed) == 2
    assert (listed[run.key("valid")]["connections"], listed[run.key("valid")]["messages"]) \
        == (2, 2)
    assert not_recorded in metrics
    assert [event["budget"] for event in server.events("chains.not_recorded")] == ["client"]


def test_a_chain_that_carried_a_message_is_recorded_whatever_the_budget(omgate_server,
                                                                        client_pki, tmp_path):
    """Request mode stores what a chain it would refuse sends: a chain that carried a
    message is always recorded, like an accepted one; one that only failed is not."""
    server = omgate_server({"chains": {"max_new_per_hour": 0},
                            "client_auth": {"mode": "request"}})
    run = mixed_cases(client_pki, tmp_path / "cases")
    send_mixed_run(server, run, {"valid": 1, "expired": 1})
    assert server.post(b"<not-a-notification/>", cert=run.cases["untrusted"]).status_code \
        != 200
    assert server.stop() == 0
    listed = {item["chain_sha256"]: item for item in chains_json(server.config_path)}
    assert set(listed) == {run.key("valid"), run.key("expired")}
    assert (listed[run.key("expired")]["outcome"], listed[run.key("expired")]["messages"]) \
        == ("would_reject", 1)


def test_replaying_the_senders_chain_without_its_key_leaves_its_record_alone(omgate_server,
                                                                            client_pki,
                                                                            tmp_path):
    """A client presents the sender's public chain and fails CertificateVerify: the record
    counts one unproven sighting and still says when and from where the sender was seen."""
    from swapper import present_without_its_key

    server = omgate_server({"client_auth": {"mode": "request"}})
    run = mixed_cases(client_pki, tmp_path / "cases")
    send_mixed_run(server, run, {"valid": 1})
    sender = server.wait_for("client_auth.decision")["peer"]
    time.sleep(0.01)
    replayed_at = dt.datetime.now(dt.UTC)
    attacker = issue(name("attacker.example", "Attacker"),
                     usages=(ExtendedKeyUsageOID.CLIENT_AUTH,))
    attacker_case = _write(tmp_path / "attacker", "attacker", attacker)
    present_without_its_key(server, x509.load_pem_x509_certificates(
        run.cases["valid"].chain.read_bytes()), attacker_case.chain, attacker_case.key)
    replay = server.wait_for("client_auth.decision",
                             lambda event: event.get("outcome") == "unproven")
    assert replay["peer"] != sender
    assert server.stop() == 0
    item = {item["chain_sha256"]: item for item in chains_json(server.config_path)}[
        run.key("valid")]
    assert (item["connections"], item["messages"], item["unproven"]) == (1, 1, 1)
    assert (item["last_peer"], item["source"], item["outcome"]) == (sender, "tls", "accept")
    assert dt.datetime.fromisoformat(item["last_seen"]) < replayed_at


def test_chains_not_seen_for_retention_days_are_removed(omgate_server, client_pki, tmp_path):
    database = tmp_path / "inbox.db"
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=40)

    async def seed() -> None:
        inbox = await open_inbox(f"sqlite:///{database}")
        await inbox.record_chains([ChainSighting("ab" * 32, (), "tls", old, old, 1, 0, 0,
                                                 None, None, ())], [])
        await inbox.close()

    asyncio.run(seed())
    run = mixed_cases(client_pki, tmp_path / "cases")
    server = omgate_server({"chains": {"retention_days": 30}})
    send_mixed_run(server, run, {"valid": 1})
    assert server.stop() == 0
    listed = chains_json(server.config_path, "--since", "1000d")
    assert [item["chain_sha256"] for item in listed] == [run.key("valid")]
