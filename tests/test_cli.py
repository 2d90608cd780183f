"""The command line: pki dev, inbox list/show/export, help and exit statuses."""

from __future__ import annotations

import json
import ssl

from cryptography import x509
from harness import PAYLOADS, is_ack, run_omgate


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
