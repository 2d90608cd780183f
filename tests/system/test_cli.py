"""The command line: pki dev, inbox list/show/export, help and exit statuses."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import ssl
import subprocess
import time

import pytest
from cryptography import x509
from harness import PAYLOADS, ROOT, is_ack, omgate_command, run_omgate
from messages import envelope, notification


def test_pki_dev_writes_a_usable_server_and_client_chain(tmp_path):
    out = tmp_path / "dev"
    result = run_omgate("pki", "dev", "--out", str(out))
    assert result.returncode == 0, result.stderr
    names = {path.name for path in out.iterdir()}
    assert names == {"ca.pem", "server.pem", "server.key", "client-ca.pem",
                     "client-intermediate.pem", "client.pem", "client.key", "client-chain.pem"}
    assert (out / "server.key").stat().st_mode & 0o077 == 0
    server = x509.load_pem_x509_certificate((out / "server.pem").read_bytes())
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    chain = x509.load_pem_x509_certificates((out / "client-chain.pem").read_bytes())
    intermediate = x509.load_pem_x509_certificate((out / "client-intermediate.pem").read_bytes())
    root = x509.load_pem_x509_certificate((out / "client-ca.pem").read_bytes())
    assert [c.subject for c in chain] == [chain[0].subject, intermediate.subject]
    chain[0].verify_directly_issued_by(intermediate)
    intermediate.verify_directly_issued_by(root)
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.load_cert_chain(out / "client-chain.pem", out / "client.key")
    again = run_omgate("pki", "dev", "--out", str(out))
    assert again.returncode == 1
    assert "--force" in again.stderr


KEYS = ("server.key", "client.key")


def test_pki_dev_force_over_keys_others_could_read_writes_private_keys_in_new_files(tmp_path):
    out = tmp_path / "dev"
    assert run_omgate("pki", "dev", "--out", str(out)).returncode == 0
    for key in KEYS:
        (out / key).chmod(0o644)  # a key copied or made by hand, with the usual umask
    old_key = (out / "server.key").read_bytes()
    with (out / "server.key").open("rb") as opened_by_another_user:  # while it was readable
        result = run_omgate("pki", "dev", "--out", str(out), "--force", umask=0o022)
        assert result.returncode == 0, result.stderr
        for key in KEYS:
            assert (out / key).stat().st_mode & 0o777 == 0o600, key
        assert (out / "server.key").read_bytes() != old_key
        # the new key went into a new file: what was opened before still reads the old key
        assert opened_by_another_user.read() == old_key
    assert (out / "ca.pem").stat().st_mode & 0o777 == 0o644  # certificates stay readable
    assert sorted(path.name for path in out.iterdir() if path.name.startswith(".")) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file to another user")
def test_pki_dev_force_run_as_root_keeps_the_owner_of_a_key_it_replaces(tmp_path):
    out = tmp_path / "dev"
    assert run_omgate("pki", "dev", "--out", str(out)).returncode == 0
    service_user = 65534  # nobody: the user a service reads its key as
    os.chown(out / "server.key", service_user, service_user)
    assert run_omgate("pki", "dev", "--out", str(out), "--force").returncode == 0
    replaced = (out / "server.key").stat()
    assert (replaced.st_uid, replaced.st_gid) == (service_user, service_user)
    assert replaced.st_mode & 0o777 == 0o600
    assert (out / "client.key").stat().st_uid == 0  # a file it creates is its own


def _plant_link(kind: str, tmp_path) -> tuple:
    """A link an attacker left where ``pki dev`` writes; what it points at."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "dev"
    if kind == "out":
        out.symlink_to(elsewhere, target_is_directory=True)
        return out, out, elsewhere
    out.mkdir()
    target = elsewhere / "planted.key"
    if kind == "existing":
        target.write_bytes(b"the attacker's file")
        target.chmod(0o644)
    (out / "server.key").symlink_to(target)
    return out, out / "server.key", target


@pytest.mark.parametrize("force", [False, True])
@pytest.mark.parametrize("kind", ["dangling", "existing", "out"])
def test_pki_dev_refuses_symbolic_links_and_writes_nothing_through_them(tmp_path, kind, force):
    out, link, target = _plant_link(kind, tmp_path)
    before = sorted(path.name for path in target.iterdir()) if target.is_dir() else \
        (target.read_bytes() if target.exists() else None)
    result = run_omgate("pki", "dev", "--out", str(out), *(["--force"] if force else []))
    assert result.returncode == 1, result.stdout
    assert str(link) in result.stderr
    assert "symbolic link" in result.stderr and "remove" in result.stderr
    assert link.is_symlink()
    if target.is_dir():
        assert sorted(path.name for path in target.iterdir()) == before == []
    else:
        assert (target.read_bytes() if target.exists() else None) == before
        assert before is None or target.stat().st_mode & 0o777 == 0o644
        assert [path.name for path in out.iterdir()] == ["server.key"]  # nothing else written


def test_inbox_show_and_export(omgate_server):
    server = omgate_server()
    assert is_ack(server.post((PAYLOADS / "amplabs-batch_update_contacts.xml").read_bytes()))
    config = str(server.config_path)
    listed = json.loads(run_omgate("inbox", "list", "--config", config, "--limit", "2").stdout)
    assert len(listed) == 2
    shown = run_omgate("inbox", "show", str(listed[1]["id"]), "--config", config)
    assert json.loads(shown.stdout) == listed[1]
    assert set(listed[1]) >= {"organization_id", "action_id", "notification_id", "sobject_type",
                              "record_id", "fields", "received_at"}
    exported = run_omgate("inbox", "export", "--config", config).stdout.splitlines()
    assert [json.loads(line)["notification_id"] for line in exported] == [
        "04lxx000000CaSeAAK", "04lxx000000CaSfAAK", "04lxx000000CaSgAAK"]
    missing = run_omgate("inbox", "show", "424242", "--config", config)
    assert missing.returncode == 1
    assert "424242" in missing.stderr


def test_help_teaches_and_usage_errors_exit_2(tmp_path):
    result = run_omgate("--help")
    assert result.returncode == 0
    for command in ("serve", "inbox", "pki"):
        assert command in result.stdout
    assert "OMGATE_" in run_omgate("serve", "--help").stdout
    assert run_omgate("no-such-command").returncode == 2
    bad = tmp_path / "bad.toml"
    bad.write_text("[server]\nbind = 8443\n")
    result = run_omgate("inbox", "list", "--config", str(bad))
    assert result.returncode == 2
    assert str(bad) in result.stderr and "[server] bind" in result.stderr


def test_help_points_to_the_manual_that_is_installed():
    """--help pointed to README.md, which a wheel does not hold: it points to `omgate
    help`, which reads the manual wherever omgate is (the wheel's test runs it there)."""
    top = run_omgate("--help").stdout
    assert "README" not in top and "`omgate help TOPIC`" in top
    topics = run_omgate("help")
    assert topics.returncode == 0
    assert "\n  The policy, and what the log says about it\n" in topics.stdout
    probe = run_omgate("help", "probe")
    assert probe.returncode == 0
    assert probe.stdout.startswith("### `omgate probe URL`: a deployed endpoint")
    assert "\n### `omgate send URL`" not in probe.stdout  # the section, not the rest
    assert run_omgate("help", "client", "certificates").stdout.startswith(
        "## Client certificates\n")
    unknown = run_omgate("help", "no-such-topic")
    assert unknown.returncode == 2
    assert "no section of the manual is about 'no-such-topic'" in unknown.stderr
    assert "Quick start" in unknown.stderr


def test_version_names_omgate_python_and_openssl():
    result = run_omgate("--version")
    assert result.returncode == 0
    assert re.fullmatch(r"omgate \S+ \(Python 3\.\d+\.\d+\S*, OpenSSL \d+\.\d+\.\d+\S*\)\n",
                        result.stdout), result.stdout


@pytest.mark.parametrize("workers", [1, 2])
def test_ctrl_c_stops_serve_gracefully_with_status_130(omgate_server, workers):
    server = omgate_server({"server": {"workers": workers}})
    deadline = time.monotonic() + 15
    while len(server.events("server.started")) < workers and time.monotonic() < deadline:
        time.sleep(0.1)
    assert is_ack(server.post((PAYLOADS / "amplabs-create_account.xml").read_bytes()))
    server.process.send_signal(signal.SIGINT)
    assert server.process.wait(30) == 130
    assert len(server.events("server.stopped")) == workers  # drained, not killed


def test_ctrl_c_stops_a_long_send_at_once_with_status_130(shared_server, dev_pki):
    process = subprocess.Popen(
        [*omgate_command("send", f"{shared_server.url}/salesforce/outbound", "--generate",
                         "Account", "--count", "100000", "--concurrency", "2",
                         "--ca", str(shared_server.ca_path))],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert " ack: " in process.stdout.readline()  # it is sending
        process.send_signal(signal.SIGINT)
        assert process.wait(15) == 130  # not after the other 99,999 messages
        assert "Traceback" not in process.stderr.read()
    finally:
        process.kill()
        process.wait()


def test_a_reader_that_goes_away_ends_export_quietly(omgate_server):
    server = omgate_server()
    description = f"<sf:Description>{'long text ' * 80}</sf:Description>"
    for batch in range(3):  # several hundred kilobytes of JSON Lines, more than a pipe holds
        body = envelope(*(notification(f"04lB{batch}{index:010d}AAA", description)
                          for index in range(100)))
        assert is_ack(server.post(body))
    command = " ".join(shlex.quote(part) for part in omgate_command(
        "inbox", "export", "--config", str(server.config_path)))
    result = subprocess.run(["bash", "-c", f"{command} | head -1; echo \"$PIPESTATUS\" >&2"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert json.loads(result.stdout)["notification_id"] == "04lB00000000000AAA"
    assert result.stderr == "141\n"  # no BrokenPipeError traceback; 128 + SIGPIPE


def test_inbox_list_says_when_it_stops_at_its_limit_and_filters(omgate_server):
    server = omgate_server()
    for index in range(3):
        assert is_ack(server.post(envelope(notification(f"04lL{index:011d}AAA"))))
    config = str(server.config_path)

    def listed(*args: str) -> tuple[list[str], str]:
        result = run_omgate("inbox", "list", "--config", config, *args)
        assert result.returncode == 0, result.stderr
        return [n["notification_id"] for n in json.loads(result.stdout)], result.stderr

    everything, quiet = listed()
    assert len(everything) == 3 and quiet == ""
    first_two, note = listed("--limit", "2")
    assert first_two == everything[:2]
    stored = json.loads(run_omgate("inbox", "list", "--config", config).stdout)
    assert note == (f"omgate inbox list: stopped at --limit 2; more notifications match: "
                    f"--after {stored[1]['id']} lists the next ones\n")
    assert listed("--limit", "3") == (everything, "")
    assert listed("--since", stored[1]["received_at"])[0] == everything[1:]
    assert listed("--since", "1h")[0] == everything
    assert listed("--since", "1h", "--state", "delivered")[0] == []
    assert listed("--state", "pending", "--limit", "1")[0] == everything[:1]
    refused = run_omgate("inbox", "list", "--config", config, "--since", "last tuesday")
    assert refused.returncode == 2
    assert "not an ISO 8601 time" in refused.stderr
