"""The operator's tools as an integration engineer meets them: certificate files as
consoles offer them, reload, the health listener, shell completion."""

from __future__ import annotations

import json
import re
import shlex
import signal
import subprocess

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7
from harness import PAYLOADS, ROOT, is_ack, require_executable, run_omgate

from service.tools.pki import issue, name, new_key

BODY = (PAYLOADS / "amplabs-create_account.xml").read_bytes()


def inspected(path, config) -> tuple[int, dict]:
    result = run_omgate("inspect", str(path), "--config", str(config), "--json")
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)


def test_inspect_reads_der_and_pkcs7_files_as_consoles_offer_them(client_pki, tmp_path):
    config = tmp_path / "omgate.toml"
    config.write_text(f'[client_auth]\ntrust = ["{client_pki.root_file}"]\n')
    valid = client_pki.cases["valid"]
    chain = x509.load_pem_x509_certificates(valid.chain.read_bytes())
    files = {
        "leaf.der": chain[0].public_bytes(Encoding.DER),
        "leaf.cer": chain[0].public_bytes(Encoding.DER),
        "chain.p7b": pkcs7.serialize_certificates(chain, Encoding.PEM),
        "chain.p7c": pkcs7.serialize_certificates(chain, Encoding.DER),
    }
    for filename, data in files.items():
        (tmp_path / filename).write_bytes(data)
    as_pem = {"leaf": inspected(valid.leaf, config), "chain": inspected(valid.chain, config)}
    for filename in files:
        kind = filename.split(".")[0]
        status, document = inspected(tmp_path / filename, config)
        assert (status, document) == as_pem[kind], filename
    assert as_pem["chain"][0] == 0  # the bundle's chain is accepted, as its PEM form is

    (tmp_path / "notes.txt").write_text("not a certificate")
    refused = run_omgate("inspect", str(tmp_path / "notes.txt"), "--config", str(config))
    assert refused.returncode == 2
    assert "holds no certificate (PEM, DER or PKCS#7)" in refused.stderr


@pytest.mark.parametrize("kind", ["ec", "rsa"])
def test_reload_with_a_key_of_another_certificate_says_so(omgate_server, dev_pki, tmp_path,
                                                          kind):
    live_cert, live_key = tmp_path / "live.pem", tmp_path / "live.key"
    live_cert.write_bytes((dev_pki / "server.pem").read_bytes())
    live_key.write_bytes((dev_pki / "server.key").read_bytes())
    server = omgate_server({"server": {"certfile": live_cert, "keyfile": live_key,
                                       "reload_check_seconds": 0}})
    live_key.write_bytes(issue(name("another"), key=new_key(kind)).key_pem())
    server.process.send_signal(signal.SIGHUP)
    failed = server.wait_for("tls.reload_failed")
    assert ("the key in server.keyfile does not belong to the certificate in "
            "server.certfile") in failed["reason"], failed
    assert server.post(BODY).status_code == 200  # the old pair stays in service


def test_backlog_metric_counts_what_is_pending_without_delivery(omgate_server):
    server = omgate_server()  # no [delivery]: notifications stay pending for whoever reads
    contacts = (PAYLOADS / "amplabs-batch_update_contacts.xml").read_bytes()
    assert is_ack(server.post(contacts))
    pending = len(json.loads(run_omgate("inbox", "list", "--config",
                                        str(server.config_path)).stdout))
    assert pending > 1
    metrics = httpx.get(f"http://127.0.0.1:{server.extra['health_port']}/metrics").text
    assert f"omgate_delivery_backlog {float(pending)}" in metrics
    oldest = re.search(r"^omgate_delivery_oldest_pending_seconds (\S+)$", metrics, re.M)
    assert oldest and float(oldest.group(1)) > 0


HEALTH_ROUTES = ("/healthz", "/readyz", "/metrics")


def test_the_health_listener_serves_what_the_docs_say(omgate_server):
    server = omgate_server()
    base = f"http://127.0.0.1:{server.extra['health_port']}"
    assert all(httpx.get(base + route).status_code == 200 for route in HEALTH_ROUTES)
    readme_row = re.search(r"^\| `server\.health_bind` \|(.*)\|$",
                           (ROOT / "README.md").read_text(), re.M)
    assert readme_row is not None
    for config in ("omgate.toml", "container.toml"):
        text = (ROOT / "config" / config).read_text()
        comment = re.search(r"((?:^#.*\n)+)health_bind =", text, re.M)
        assert comment is not None, config
        for route in HEALTH_ROUTES:
            assert route in comment.group(1), (config, route)
    for route in HEALTH_ROUTES:
        assert f"`{route}`" in readme_row.group(1), route


def bash_completes(script: str, *words: str) -> list[str]:
    """What bash offers for the last of ``words`` after ``omgate``, with ``script`` loaded
    as the README says (source <(omgate completion bash))."""
    typed = ("omgate", *words)
    line = " ".join(typed)
    program = f"""
source /dev/stdin <<'SCRIPT'
{script}
SCRIPT
function=$(complete -p omgate | sed -E 's/.* -F ([^ ]+) .*/\\1/')
COMP_WORDS=({" ".join(shlex.quote(word) for word in typed)})
COMP_CWORD={len(words)}
COMP_LINE={shlex.quote(line)}
COMP_POINT={len(line)}
"$function" omgate {shlex.quote(typed[-1])} {shlex.quote(typed[-2])}
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    result = subprocess.run(["bash", "-c", program], capture_output=True, text=True,
                            timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_bash_completion_completes_subcommands_and_options():
    require_executable("bash")
    script = run_omgate("completion", "bash")
    assert script.returncode == 0, script.stderr
    assert {"serve", "check", "inspect", "probe", "send", "inbox", "pki",
            "completion"} <= set(bash_completes(script.stdout, ""))
    assert bash_completes(script.stdout, "pr") == ["probe"]
    assert "--client-cert" in bash_completes(script.stdout, "probe", "--cl")
    assert run_omgate("completion", "zsh").stdout.startswith("#compdef omgate")
