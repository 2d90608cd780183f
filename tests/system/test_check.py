"""`omgate check`: a deployment judged before it goes live."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from harness import FIXTURES, free_port, run_omgate, to_toml
from server_pki import AIA, build_server_pki

from service.tools.pki import issue, name, new_key


@pytest.fixture(scope="module")
def server_pki(tmp_path_factory):
    return build_server_pki(tmp_path_factory.mktemp("server-pki"))


def config_for(folder, certfile, keyfile, public_names, client_auth=None, server=None) -> str:
    path = folder / "omgate.toml"
    path.write_text(to_toml({
        "server": {"certfile": certfile, "keyfile": keyfile, "public_names": list(public_names),
                   **(server or {})},
        "client_auth": {"trust": [], "mode": "request", **(client_auth or {})},
        "inbox": {"url": f"sqlite:///{folder / 'inbox.db'}"},
    }))
    return str(path)


def checked(config: str, *args: str) -> tuple[int, dict]:
    result = run_omgate("check", "--config", config, "--json", *args)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)


def codes(report: dict, severity: str) -> set[str]:
    return {f["code"] for f in report["findings"] if f["severity"] == severity}


CASES = ["correct", "no_intermediate", "wrong_order", "root_included", "expired",
         "wildcard_one_label", "self_signed", "weak_key", "client_auth_only"]


@pytest.mark.parametrize("label", CASES)
def test_each_server_fault_is_named_with_its_fix(server_pki, tmp_path, label):
    case = server_pki.cases[label]
    config = config_for(tmp_path, case.chain, case.key, case.public_names)
    status, report = checked(config, "--trust", str(server_pki.root))
    assert codes(report, "error") == case.errors, report["findings"]
    assert codes(report, "warning") == case.warnings, report["findings"]
    assert status == (1 if case.errors else 0)
    assert len(report["server_chain"]) == case.chain.read_text().count("BEGIN CERTIFICATE")
    for finding in report["findings"]:
        assert set(finding) == {"code", "severity", "cert", "message", "hint"}
        assert finding["hint"]


def test_key_mismatch_and_text_output(server_pki, tmp_path):
    correct = server_pki.cases["correct"]
    other_key = server_pki.cases["expired"].key
    config = config_for(tmp_path, correct.chain, other_key, correct.public_names)
    result = run_omgate("check", "--config", config, "--trust", str(server_pki.root))
    assert result.returncode == 1
    assert "ERROR key_mismatch [certificate 0]" in result.stdout
    assert "fix: Pair the certificate with the key" in result.stdout
    assert "days left" in result.stdout
    assert result.stdout.rstrip().endswith("FAILED: 1 error, 0 warnings")


def test_without_trust_the_public_roots_are_used(server_pki, tmp_path):
    correct = server_pki.cases["correct"]
    config = config_for(tmp_path, correct.chain, correct.key, correct.public_names)
    status, report = checked(config)  # certifi's roots do not include the test root
    assert status == 1
    assert codes(report, "error") == {"not_publicly_trusted"}


def test_unusable_configuration_exits_2(tmp_path):
    config = config_for(tmp_path, tmp_path / "missing.pem", tmp_path / "missing.key", ["x"])
    result = run_omgate("check", "--config", config)
    assert result.returncode == 2
    assert "[server] certfile" in result.stderr and "missing.pem" in result.stderr


def test_client_auth_settings_that_cannot_work(server_pki, client_pki, tmp_path):
    correct = server_pki.cases["correct"]
    stranger = issue(name("Stranger CA"), ca=True)
    stranger_leaf = issue(name("pinned.example.test"), issuer=stranger, key=new_key())
    (tmp_path / "pinned.pem").write_bytes(stranger_leaf.pem())
    (tmp_path / "stranger.pem").write_bytes(stranger.pem())
    config = config_for(tmp_path, correct.chain, correct.key, correct.public_names, {
        "mode": "require", "trust": [client_pki.root_file],
        "pin_files": [tmp_path / "pinned.pem"],
        "issuer_dn": "/C=US/O=Nobody/CN=No Such CA", "verify_depth": 1,
        "forwarded_cert": "xfcc",
        "advertise_ca_names": tmp_path / "stranger.pem",
    })
    status, report = checked(config, "--trust", str(server_pki.root))
    assert status == 1
    by_code = {f["code"]: f for f in report["findings"]}
    [no_proxies] = [f for f in report["findings"] if f["code"] == "config_conflict"
                    and "trusted_proxies is empty" in f["message"]]
    assert no_proxies["severity"] == "error"  # a forwarded certificate never believed
    # the pinned certificate chains to nothing in trust
    assert by_code["missing_intermediate"]["message"].startswith("[client_auth] pin_files")
    [nothing_matches] = [f for f in report["findings"] if f["code"] == "issuer_dn_mismatch"
                         and f["severity"] == "warning"]
    assert "nothing will match" in nothing_matches["message"]
    assert by_code["no_client_cert"]["severity"] == "warning"  # Java would send nothing
    assert "advertise_ca_names" in by_code["no_client_cert"]["message"]


def test_a_leaf_sent_alone_is_a_missing_intermediate_whatever_the_roots(dev_pki, server_pki,
                                                                       tmp_path):
    """The development server certificate, sent alone, checked against the public roots and
    against roots given with --trust: the finding names the issuer and the roots in use."""
    config = config_for(tmp_path, dev_pki / "server.pem", dev_pki / "server.key", ["localhost"])
    issuer = "CN=omgate development server CA,O=omgate development"
    for roots in (["--trust", str(server_pki.root)], []):
        status, report = checked(config, *roots)
        assert status == 1
        [finding] = report["findings"]
        assert finding["code"] == "missing_intermediate", finding
        assert f"issued by {issuer}" in finding["message"]
        assert f"Append the intermediate {issuer}" in finding["hint"]
        said = finding["message"] + finding["hint"]
        assert ("public trust store" in said) == (not roots), said
        assert (f"--trust {server_pki.root}" in said) == bool(roots), said
    assert checked(config, "--trust", str(dev_pki / "ca.pem"))[0] == 0


def test_a_missing_intermediate_names_where_its_certificate_says_to_get_it(server_pki,
                                                                           tmp_path):
    case = server_pki.cases["no_intermediate"]
    config = config_for(tmp_path, case.chain, case.key, case.public_names)
    _, report = checked(config, "--trust", str(server_pki.root))
    [finding] = report["findings"]
    assert finding["code"] == "missing_intermediate"
    assert AIA in finding["message"] and AIA in finding["hint"]


def test_issuer_dn_naming_an_intermediate_the_client_sends(server_pki, client_pki, tmp_path):
    """Only the root is trusted; issuer_dn names the intermediate the client sends above its
    certificate. check cannot see that intermediate: it says so, and warns only when no
    intermediate fits under verify_depth."""
    correct = server_pki.cases["correct"]
    intermediate = client_pki.intermediate.certificate.subject.rfc4514_string()
    rules = {"mode": "require", "trust": [client_pki.root_file], "issuer_dn": intermediate}
    config = config_for(tmp_path, correct.chain, correct.key, correct.public_names, rules)
    status, report = checked(config, "--trust", str(server_pki.root))
    assert status == 0
    [finding] = [f for f in report["findings"] if f["code"] == "issuer_dn_mismatch"]
    assert finding["severity"] == "info"
    assert "nothing will match" not in finding["message"]
    assert "which check cannot see" in finding["message"]
    # and the configuration does accept such a certificate
    valid = client_pki.cases["valid"].chain
    assert run_omgate("inspect", str(valid), "--config", config).returncode == 0

    config = config_for(tmp_path, correct.chain, correct.key, correct.public_names,
                        {**rules, "verify_depth": 1})
    _, report = checked(config, "--trust", str(server_pki.root))
    [finding] = [f for f in report["findings"] if f["code"] == "issuer_dn_mismatch"]
    assert finding["severity"] == "warning"
    assert "verify_depth = 1 leaves no room for an intermediate" in finding["message"]
    assert run_omgate("inspect", str(valid), "--config", config).returncode == 1


def test_require_without_anchors_or_pins_refuses_everyone(server_pki, tmp_path):
    correct = server_pki.cases["correct"]
    config = config_for(tmp_path, correct.chain, correct.key, correct.public_names,
                        {"mode": "require"})
    _, report = checked(config, "--trust", str(server_pki.root))
    [conflict] = [f for f in report["findings"] if f["code"] == "config_conflict"]
    assert "every client certificate will be refused" in conflict["message"]


def limbo(path):
    case = json.loads(path.read_text())
    return case, dt.datetime.fromisoformat(case["validation_time"])


CHAINS = sorted((FIXTURES / "chains").glob("*.limbo.json"))


@pytest.mark.parametrize("path", CHAINS, ids=lambda p: p.name.split(".limbo")[0])
def test_real_chains_in_each_broken_order(path, tmp_path):
    case, when = limbo(path)
    peer, intermediates = case["peer_certificate"], case["untrusted_intermediates"]
    (tmp_path / "root.pem").write_text("".join(case["trusted_certs"]))
    (tmp_path / "any.key").write_bytes(
        issue(x509.Name([]), key=new_key()).key_pem())  # nobody has the real keys
    host = case["expected_peer_name"]["value"]
    orders = {
        "as sent": ([peer, *intermediates], {"key_mismatch"}, set()),
        "reversed": ([*reversed(intermediates), peer], {"key_mismatch", "chain_out_of_order"},
                     set()),
        "leaf only": ([peer], {"key_mismatch", "missing_intermediate"}, set()),
        "root included": ([peer, *intermediates, *case["trusted_certs"]], {"key_mismatch"},
                          {"root_included"}),
    }
    for label, (chain, errors, warnings) in orders.items():
        (tmp_path / "chain.pem").write_text("".join(chain))
        config = config_for(tmp_path, tmp_path / "chain.pem", tmp_path / "any.key", [host])
        _, report = checked(config, "--trust", str(tmp_path / "root.pem"), "--at",
                            when.isoformat())
        assert codes(report, "error") == errors, (label, report["findings"])
        assert codes(report, "warning") - {"expires_soon"} == warnings, (label,
                                                                         report["findings"])


def test_server_chain_hints_name_only_server_side_settings(tmp_path):
    """A stale intermediate and a SHA-1 signature in the server's own chain: every hint
    speaks of server.certfile and the server, never of client_auth or the sender."""
    from corpus import resigned_with_sha1

    now = dt.datetime.now(dt.UTC)
    root = issue(name("Stale Test Root"), ca=True)
    stale = issue(name("Stale Test Intermediate"), issuer=root, ca=True,
                  not_before=now - dt.timedelta(days=900), not_after=now - dt.timedelta(days=2))
    leaf = resigned_with_sha1(issue(name("omgate.example.test", "Example Receiver"),
                                    issuer=stale, key=new_key("rsa"),
                                    dns_names=("omgate.example.test",)), stale)
    chain, key, roots = tmp_path / "chain.pem", tmp_path / "server.key", tmp_path / "root.pem"
    chain.write_bytes(leaf.pem() + stale.pem())
    key.write_bytes(leaf.key_pem())
    roots.write_bytes(root.pem())
    config = config_for(tmp_path, chain, key, ("omgate.example.test",))
    status, report = checked(config, "--trust", str(roots))
    assert status == 1
    assert {"expired", "weak_signature_algorithm"} <= codes(report, "error")
    for finding in report["findings"]:
        text = finding["message"] + " " + finding["hint"]
        assert "client_auth" not in text and "sender" not in text and "client " not in text, \
            finding
    expired = next(f for f in report["findings"] if f["code"] == "expired")
    assert "server.certfile" in expired["hint"]


def _in_other_forms(dev_pki, folder):
    """The development server certificate and key as consoles and CAs also hand them out:
    (certfile, keyfile, the key an error must blame, what it must say)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import pkcs7, pkcs12

    pem, key = dev_pki / "server.pem", dev_pki / "server.key"
    certificate = x509.load_pem_x509_certificate(pem.read_bytes())
    private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    der, p7b, p12 = folder / "server.der", folder / "server.p7b", folder / "server.p12"
    encrypted = folder / "encrypted.key"
    der.write_bytes(certificate.public_bytes(serialization.Encoding.DER))
    p7b.write_bytes(pkcs7.serialize_certificates([certificate], serialization.Encoding.DER))
    p12.write_bytes(pkcs12.serialize_key_and_certificates(
        b"server", private, certificate, None, serialization.BestAvailableEncryption(b"pw")))
    encrypted.write_bytes(private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw")))
    return {
        "der": (der, key, "certfile", [
            "holds one certificate in DER (binary) form",
            f"openssl x509 -inform DER -in {der} -out {folder / 'server.pem'}"]),
        "pkcs7": (p7b, key, "certfile", [
            "holds a PKCS#7 bundle (DER)",
            f"openssl pkcs7 -inform DER -print_certs -in {p7b} -out {folder / 'server.pem'}"]),
        "pkcs12": (p12, key, "certfile", [
            "holds a PKCS#12 (.p12/.pfx) bundle", f"openssl pkcs12 -in {p12} -nokeys"]),
        "encrypted_key": (pem, encrypted, "keyfile", [
            "the key is encrypted", f"openssl pkey -in {encrypted} -out"]),
        "swapped": (key, pem, "certfile", ["certfile and keyfile may be swapped"]),
    }


@pytest.mark.parametrize("form", ["der", "pkcs7", "pkcs12", "encrypted_key", "swapped"])
def test_check_refuses_what_serve_cannot_load_in_the_same_words(dev_pki, tmp_path, form):
    """A server certificate in DER passed `check` (OK: 0 errors) and stopped `serve` with
    OpenSSL's text: both read the files with one loader now, and say which file, what it
    holds and the command that converts it."""
    certfile, keyfile, blamed, words = _in_other_forms(dev_pki, tmp_path)[form]
    config = config_for(tmp_path, certfile, keyfile, ["localhost"],
                        server={"bind": [f"127.0.0.1:{free_port()}"], "workers": 1})
    checked_result = run_omgate("check", "--config", config, "--trust", str(dev_pki / "ca.pem"))
    served = run_omgate("serve", "--config", config)
    assert (checked_result.returncode, served.returncode) == (2, 2), (checked_result, served)
    said = checked_result.stderr.strip()
    assert said.startswith(f"omgate: configuration error: {config}: [server] {blamed}: ")
    for word in words:
        assert word in said, said
    assert said in served.stderr  # the same line, from the same loader
    assert "PEM routines" not in served.stderr and "[('" not in served.stderr


def test_errors_name_the_variable_that_set_the_value(dev_pki, tmp_path):
    """Values set by OMGATE_* variables are blamed on the variable, not on the file; the
    development certificates are suggested only for the files `omgate pki dev` writes."""
    config = config_for(tmp_path, dev_pki / "server.pem", dev_pki / "server.key",
                        ["localhost"], server={"bind": [f"127.0.0.1:{free_port()}"],
                                               "workers": 1})
    (tmp_path / "server.der").write_bytes(x509.load_pem_x509_certificate(
        (dev_pki / "server.pem").read_bytes()).public_bytes(Encoding.DER))
    cases = {
        "/nope.pem": ["/nope.pem: file not found; correct the path"],
        str(tmp_path / "server.der"): ["holds one certificate in DER (binary) form"],
    }
    for value, words in cases.items():
        env = {"OMGATE_SERVER__CERTFILE": value}
        for command in ("check", "serve"):
            result = run_omgate(command, "--config", config, env=env)
            assert result.returncode == 2, result
            assert ("omgate: configuration error: environment variable "
                    "OMGATE_SERVER__CERTFILE: [server] certfile: ") in result.stderr
            assert config not in result.stderr and "pki dev" not in result.stderr
            for word in words:
                assert word in result.stderr
    missing_dev = run_omgate("serve", "--config", config,
                             env={"OMGATE_SERVER__KEYFILE": str(tmp_path / "dev" / "server.key")})
    assert (f"`omgate pki dev --out {tmp_path / 'dev'}` writes development certificates"
            in missing_dev.stderr), missing_dev.stderr
    console = run_omgate("serve", "--config", config,
                         env={"OMGATE_SERVER__ADMIN_BIND": f"0.0.0.0:{free_port()}",
                              "OMGATE_ADMIN_TOKEN": ""})
    assert console.returncode == 2
    assert ("environment variable OMGATE_SERVER__ADMIN_BIND: [server] admin_bind: 0.0.0.0:"
            in console.stderr), console.stderr


def test_inspect_names_its_own_arguments(client_pki, tmp_path):
    config = config_for(tmp_path, tmp_path / "s.pem", tmp_path / "s.key", [])
    chain = str(client_pki.cases["valid"].chain)
    trust = run_omgate("inspect", chain, "--config", config, "--trust", "nope.pem")
    assert trust.returncode == 2
    assert trust.stderr == "omgate inspect: --trust: nope.pem: file not found\n"
    missing = run_omgate("inspect", "missing.pem", "--config", config)
    assert missing.returncode == 2
    assert missing.stderr == "omgate inspect: missing.pem: file not found\n"


def test_a_server_certificate_that_expired_says_so_in_words(server_pki, tmp_path):
    case = server_pki.cases["expired"]
    config = config_for(tmp_path, case.chain, case.key, case.public_names)
    result = run_omgate("check", "--config", config, "--trust", str(server_pki.root))
    assert "(expired 3 days ago)" in result.stdout, result.stdout
    assert "days left" in result.stdout  # its intermediate's
    assert "-3 days" not in result.stdout


@pytest.mark.parametrize("delivery", [
    'webhook_url = "https://hooks.example.com/in"\nwebhook_client_cert = "missing.pem"',
    'webhook_url = "https://hooks.example.com/in"\nwebhook_ca = "missing-ca.pem"',
    'webhook_url = "http://hooks.example.com/in"\nwebhook_ca = "ca.pem"',
    'handler = "no_such_module:deliver"',
], ids=["missing-client-cert", "missing-ca", "ca-for-http", "handler-not-found"])
def test_a_delivery_target_serve_would_refuse_fails_the_check(tmp_path, delivery):
    """check said OK for a [delivery] that serve and deliver refuse to start with (an
    attacker's review): it never built the delivery target."""
    (tmp_path / "ca.pem").write_text("not a certificate")
    config = tmp_path / "omgate.toml"
    config.write_text('[server]\nbind = []\nplain_bind = ["127.0.0.1:0"]\n'
                      f'[inbox]\nurl = "sqlite:///inbox.db"\n[delivery]\n{delivery}\n')
    status, report = checked(str(config))
    assert status == 1 and not report["ok"]
    [finding] = [item for item in report["findings"] if "[delivery]" in item["message"]]
    assert finding["code"] == "config_conflict" and finding["severity"] == "error"
