"""Configuration: TOML, environment overrides, and errors that name key, file and expectation."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from harness import ROOT

from service.config import BindAddress, ConfigError, load_config


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "conf").mkdir(exist_ok=True)
    path = tmp_path / "conf" / "omgate.toml"
    path.write_text(text)
    return path


def error_for(path: Path, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ or {})
    return str(caught.value)


def test_shipped_config_loads_with_documented_defaults():
    config = load_config(ROOT / "config" / "omgate.toml", {})
    assert config.server.bind == (BindAddress("127.0.0.1", 8443),)
    assert config.server.certfile == ROOT / "certs" / "dev" / "server.pem"
    assert config.inbox.url == f"sqlite:///{ROOT / 'var' / 'inbox.db'}"
    assert [endpoint.path for endpoint in config.endpoints] == ["/salesforce/outbound"]
    assert config.inbox.store_session_id is False


@pytest.mark.parametrize("name", ["omgate.toml", "container.toml"])
def test_every_shipped_key_is_documented_with_a_comment(name):
    lines = (ROOT / "config" / name).read_text().splitlines()
    keys = [number for number, line in enumerate(lines) if re.match(r"^\w+ = ", line)]
    assert len(keys) > 10
    for number in keys:
        assert lines[number - 1].startswith("#"), f"no comment above {lines[number]!r}"


def test_every_schema_key_is_in_the_shipped_config():
    from service.config import SCHEMA

    text = (ROOT / "config" / "omgate.toml").read_text()
    for section, keys in SCHEMA.items():
        assert f"[{section}]" in text
        for key in keys:
            assert re.search(rf"^{key} = ", text, re.MULTILINE), f"[{section}] {key}"


def test_relative_paths_are_relative_to_the_config_folder(tmp_path):
    path = write(tmp_path, '[server]\ncertfile = "certs/a.pem"\n'
                           '[inbox]\nurl = "sqlite:///data/inbox.db"\n')
    config = load_config(path, {})
    assert config.server.certfile == tmp_path / "conf" / "certs" / "a.pem"
    assert config.inbox.url == f"sqlite:///{tmp_path / 'conf' / 'data' / 'inbox.db'}"


def test_environment_overrides_every_kind_of_value(tmp_path):
    path = write(tmp_path, "")
    config = load_config(path, {
        "OMGATE_SERVER__BIND": '["0.0.0.0:9443", "[::1]:9444"]',
        "OMGATE_SERVER__MAX_BODY_BYTES": "2048",
        "OMGATE_INBOX__STORE_SESSION_ID": "true",
        "OMGATE_LOGGING__FORMAT": "json",
        "OMGATE_SALESFORCE__ORGANIZATION_IDS": '["00Dxx0000001gPF"]',
        "OMGATE_ENDPOINTS": '[{"path": "/a"}, {"path": "/b", "action_ids": []}]',
        "OMGATE_REQUIRE_ALL": "1",
    })
    assert config.server.bind == (BindAddress("0.0.0.0", 9443), BindAddress("::1", 9444))
    assert config.server.max_body_bytes == 2048
    assert config.inbox.store_session_id is True
    assert config.logging.format == "json"
    assert config.salesforce.organization_ids == ("00Dxx0000001gPF",)
    assert [endpoint.path for endpoint in config.endpoints] == ["/a", "/b"]


def test_omgate_config_variable_names_the_file(tmp_path):
    path = write(tmp_path, '[logging]\nlevel = "debug"\n')
    assert load_config(None, {"OMGATE_CONFIG": str(path)}).logging.level == "debug"


@pytest.mark.parametrize(("text", "words"), [
    ('[client]\nmode = "x"\n', ["unknown section [client]"]),
    ('[server]\nbnid = []\n', ["[server]", "unknown key 'bnid'"]),
    ('[server]\nmax_body_bytes = "ten"\n',
     ["[server] max_body_bytes", "expected a positive whole number", "'ten'"]),
    ('[server]\nmax_header_count = 0\n',
     ["[server] max_header_count", "expected a positive whole number"]),
    ('[server]\nbind = ["localhost"]\n', ["[server] bind", "127.0.0.1:8443"]),
    ('[server]\nbind = ["::1:8443"]\n', ["[server] bind", "brackets"]),
    ('[logging]\nformat = "yaml"\n', ["[logging] format", "auto, json, console"]),
    ('[salesforce]\norganization_ids = ["00D-bad"]\n',
     ["[salesforce] organization_ids", "15 or 18"]),
    ('[[endpoints]]\npath = "relative"\n', ["[[endpoints]] #1 path", "starting with"]),
    ('[[endpoints]]\nwsdl = "x.wsdl"\n', ["[[endpoints]] #1", "required key 'path'"]),
    ('[[endpoints]]\npath = "/a"\n[[endpoints]]\npath = "/a"\n', ["'/a' is listed twice"]),
    ('[inbox]\nurl = "mysql://x"\n', ["[inbox] url", "sqlite:///"]),
    ("[server\n", ["not valid TOML"]),
])
def test_errors_name_the_file_the_key_and_the_expectation(tmp_path, text, words):
    path = write(tmp_path, text)
    message = error_for(path)
    assert str(path) in message
    for word in words:
        assert word in message


def test_environment_errors_name_the_variable(tmp_path):
    path = write(tmp_path, "")
    message = error_for(path, {"OMGATE_SERVER__MAX_BODY_BYTES": "-3"})
    assert "environment variable OMGATE_SERVER__MAX_BODY_BYTES" in message
    assert "positive whole number" in message
    assert "OMGATE_SERVER__BINDD" in error_for(path, {"OMGATE_SERVER__BINDD": "[]"})


def test_missing_file_is_named(tmp_path):
    assert "configuration file not found" in error_for(tmp_path / "nope.toml")


def test_container_config_loads():
    config = load_config(ROOT / "config" / "container.toml", {})
    assert config.server.bind == (BindAddress("0.0.0.0", 8443),)
    assert config.server.certfile == Path("/certs/server.pem")
    assert config.inbox.url == "sqlite:////var/lib/omgate/inbox.db"
    assert config.logging.format == "json"


def test_client_auth_rules_parse_pins_and_dns(tmp_path):
    path = write(tmp_path, """
[client_auth]
pins = ["sha256:AB:CD:""" + ":".join(["ef"] * 30) + """", "spki:""" + "A" * 43 + """="]
issuer_dn = "/C=US/O=DigiCert Inc/CN=DigiCert Global G2 TLS RSA SHA256 2020 CA1"
subject_dn = "CN=proxy.salesforce.com,O=Salesforce\\\\, Inc.,C=US"
allowed_names = ["*.Salesforce.com"]
""")
    rules = load_config(path, {}).client_auth.rules
    assert [pin.kind for pin in rules.pins] == ["sha256", "spki"]
    assert rules.pins[0].value == "abcd" + "ef" * 30
    assert len(rules.issuer_dn.rdns) == 3
    assert rules.subject_dn.rdns[0] == frozenset({("2.5.4.6", "us")})
    assert rules.allowed_names == ("*.salesforce.com",)


@pytest.mark.parametrize(("text", "words"), [
    ('[client_auth]\npins = ["md5:00"]\n', ["[client_auth] pins", "sha256:<hex>"]),
    ('[client_auth]\npins = ["sha256:abc"]\n', ["[client_auth] pins", "64 hex digits"]),
    ('[client_auth]\nissuer_dn = "FOO=bar"\n', ["[client_auth] issuer_dn",
                                                  "unknown attribute type 'FOO'"]),
    ('[client_auth]\nmode = "sometimes"\n', ["[client_auth] mode", "off, request"]),
    ('[[endpoints]]\npath = "/a"\n[endpoints.client_auth]\nmode = "require"\n',
     ["[[endpoints]] #1 client_auth", "'mode' is set per listener"]),
    ('[[endpoints]]\npath = "/a"\n[endpoints.client_auth]\nverify_dept = 3\n',
     ["[[endpoints]] #1 client_auth", "unknown key 'verify_dept'"]),
    ('[[endpoints]]\npath = "/a"\n[endpoints.client_auth]\nverify_depth = -1\n',
     ["[[endpoints]] #1 client_auth verify_depth", "0 or more"]),
])
def test_client_auth_errors_name_the_key(tmp_path, text, words):
    message = error_for(write(tmp_path, text))
    for word in words:
        assert word in message


def test_endpoint_overrides_inherit_the_other_rules(tmp_path):
    path = write(tmp_path, """
[client_auth]
verify_depth = 3
pins = ["sha256:""" + "ab" * 32 + """"]
[[endpoints]]
path = "/plain"
[[endpoints]]
path = "/strict"
[endpoints.client_auth]
subject_dn = "CN=proxy.salesforce.com"
pins = []
""")
    config = load_config(path, {})
    plain, strict = config.endpoints
    assert plain.client_auth is None
    assert strict.client_auth.verify_depth == 3  # inherited
    assert strict.client_auth.pins == ()  # overridden
    assert strict.client_auth.subject_dn is not None


@pytest.mark.parametrize(("headers", "words"), [
    ('{ "Bad Name" = "Bearer s3cret-value" }', ["'Bad Name' is not a header name"]),
    ('{ Authorization = "Bearer ${WEBHOOK_TOKEN} s3cret-value" }', ["${ENV:NAME}"]),
    ('{ Authorization = "Bearer ${ENV:} s3cret-value" }', ["${ENV:NAME}"]),
    ('{ X-Count = 3, X-Key = "s3cret-value" }', ["X-Count is not one line of text"]),
])
def test_webhook_header_errors_name_the_header_and_never_show_a_value(tmp_path, headers,
                                                                      words):
    message = error_for(write(tmp_path, f"[delivery]\nwebhook_headers = {headers}\n"))
    assert "[delivery] webhook_headers" in message
    for word in words:
        assert word in message
    assert "s3cret-value" not in message


def test_webhook_headers_come_from_the_environment_too(tmp_path):
    config = load_config(write(tmp_path, ""), {
        "OMGATE_DELIVERY__WEBHOOK_HEADERS": '{"Authorization": "Bearer ${ENV:TOKEN}"}'})
    [header] = config.delivery.webhook_headers
    assert (header.name, header.value.render({"TOKEN": "t"})) == ("Authorization", "Bearer t")


def test_a_webhook_url_error_masks_its_password(tmp_path):
    message = error_for(write(tmp_path, '[delivery]\nwebhook_url = "https://u:s3cret@/x"\n'))
    assert "[delivery] webhook_url" in message and "s3cret" not in message
    assert "'https://u:***@/x'" in message


@pytest.mark.parametrize(("text", "environ", "said"), [
    ('[server]\n# the listener\nbind = []\n\nbnid = ["127.0.0.1:9443"]\n', {},
     "[server]: unknown key 'bnid' (at line 5); did you mean 'bind'?"),
    ('[server]\nbind = []\n\n[clientauth]\nmode = "require"\n', {},
     "unknown section [clientauth] (at line 4); did you mean [client_auth]?"),
    ('[[endpoints]]\npath = "/a"\n[[endpoints]]\npath = "/b"\nwsld = "b.wsdl"\n', {},
     "[[endpoints]] #2: unknown key 'wsld' (at line 5); did you mean 'wsdl'?"),
    ('[[endpoints]]\npath = "/a"\n[endpoints.client_auth]\ntrsut = []\n', {},
     "[[endpoints]] #1 client_auth: unknown key 'trsut' (at line 4); did you mean 'trust'?"),
    ("server.bnid = []\n", {}, "[server]: unknown key 'bnid' (at line 1); did you mean 'bind'?"),
    ("", {"OMGATE_SERVER__BINDD": "[]"},
     "environment variable OMGATE_SERVER__BINDD: no key [server] bindd; did you mean "
     "OMGATE_SERVER__BIND?"),
])
def test_an_unknown_key_is_named_with_its_line_and_the_nearest_known_one(tmp_path, text,
                                                                         environ, said):
    message = error_for(write(tmp_path, text), environ)
    assert said in message, message
    assert "known keys" not in message  # not the 25 keys of [server]


def test_an_unknown_key_with_nothing_near_lists_the_table_keys(tmp_path):
    message = error_for(write(tmp_path, "[logging]\nzzzz = 1\n"))
    assert message.endswith("[logging]: unknown key 'zzzz' (at line 2); the keys of "
                            "[logging] are format, level")


def test_the_configuration_knows_where_each_value_was_set(tmp_path):
    path = write(tmp_path, '[server]\ncertfile = "s.pem"\n')
    config = load_config(path, {"OMGATE_SERVER__KEYFILE": "/k.pem"})
    assert str(config.error("server", "certfile", "x")) == f"{path}: [server] certfile: x"
    assert str(config.error("server", "keyfile", "x")) == (
        "environment variable OMGATE_SERVER__KEYFILE: [server] keyfile: x")
    assert str(config.error("server", "workers", "x")) == (
        f"{path}: [server] workers (not set: its built-in default): x")


@pytest.mark.parametrize("value", ["nan", "inf", "1e12", "-0.5"])
@pytest.mark.parametrize("variable", ["OMGATE_SERVER__REQUEST_TIMEOUT",
                                      "OMGATE_SERVER__DRAIN_SECONDS",
                                      "OMGATE_DELIVERY__TIMEOUT",
                                      "OMGATE_DELIVERY__RETRY_MAX_SECONDS"])
def test_seconds_are_a_finite_number_of_at_most_thirty_days(tmp_path, variable, value):
    """nan compared as neither too small nor too large, inf turned a deadline off, and a
    lease of 1e12 seconds killed the delivery worker (an attacker's review)."""
    (tmp_path / "omgate.toml").write_text("")
    with pytest.raises(ConfigError, match="30 days"):
        load_config(tmp_path / "omgate.toml", {variable: value})
    accepted = load_config(tmp_path / "omgate.toml", {variable: str(30 * 86400)})
    section, key = variable.removeprefix("OMGATE_").lower().split("__")
    assert getattr(getattr(accepted, section), key) == 30 * 86400


@pytest.mark.parametrize("url", ["https://omgate:ab/Wh1sper@hooks.example.com/in",
                                 "https://omgate:12/Wh1sper@hooks.example.com/in",
                                 "https://omgate:ab?Wh1sper@hooks.example.com/in",
                                 "https://hooks.example.com:8x/in"])
def test_a_webhook_url_that_reads_two_ways_is_refused(tmp_path, url):
    """A password holding "/", "?" or "#" unencoded moves the host: the request would go
    elsewhere, without its credentials, and the password would be logged."""
    (tmp_path / "omgate.toml").write_text(f'[delivery]\nwebhook_url = "{url}"\n')
    with pytest.raises(ConfigError) as refused:
        load_config(tmp_path / "omgate.toml", {})
    assert "Wh1sper" not in str(refused.value)
