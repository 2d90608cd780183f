"""Hostile input to the parsers, in-process: each either returns a value or raises its own
documented error, quickly. The fuzz runs are bounded (a few hundred examples each) so they
fit in CI; tests/system/test_hostile_system.py holds the live server to the same."""

from __future__ import annotations

import contextlib
import time

from hostile_cases import mutations
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.clientauth import DnSyntaxError, parse_dn
from service.config import ConfigError, load_config
from service.forwarded import (
    NEED_MORE,
    ForwardedCertError,
    ProxyHeader,
    ProxyProtocolError,
    forwarded_format,
    parse,
)
from service.forwarded.proxy_protocol import V2_SIGNATURE
from service.soap import SoapFaultError, parse_message

FUZZ = settings(max_examples=300, deadline=1000,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@FUZZ
@given(st.one_of(st.binary(max_size=2000), mutations()))
def test_soap_parser_only_refuses_with_faults(body):
    started = time.monotonic()
    try:
        parse_message(body)
    except SoapFaultError as error:
        assert error.reason and error.message
    assert time.monotonic() - started < 0.5


FORMATS = ["xfcc", "aws-alb", "pem-header:X-SSL-Cert", "traefik", "azure", "rfc9440"]

HEADER_NAMES = ["x-forwarded-client-cert", "x-amzn-mtls-clientcert",
                "x-amzn-mtls-clientcert-leaf", "x-amzn-mtls-clientcert-serial-number",
                "x-ssl-cert", "x-forwarded-tls-client-cert", "x-arr-clientcert", "client-cert",
                "client-cert-chain"]

PEMISH = st.sampled_from(["-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----", "%0A",
                          ":", ",", ";", '"', "\\", "=", "Cert=", "Chain=", "Hash=", "MII",
                          "%2D%2D", "(null)", " "])


@FUZZ
@given(st.sampled_from(FORMATS), st.dictionaries(
    st.sampled_from(HEADER_NAMES),
    st.one_of(st.text(max_size=300), st.lists(PEMISH, max_size=40).map("".join)), max_size=4))
def test_forwarded_certificate_parsers_only_refuse_with_their_error(setting, headers):
    try:
        chain = forwarded_format(setting).parse(headers)
    except ForwardedCertError:
        return
    assert isinstance(chain, tuple)


@FUZZ
@given(st.one_of(st.binary(max_size=300),
                 st.binary(max_size=300).map(lambda tail: V2_SIGNATURE + tail),
                 st.text(max_size=120).map(lambda tail: ("PROXY " + tail).encode())))
def test_proxy_protocol_parser_only_refuses_with_its_error(data):
    try:
        result = parse(data)
    except ProxyProtocolError:
        return
    assert result is NEED_MORE or isinstance(result, ProxyHeader)


@FUZZ
@given(st.one_of(st.text(max_size=200), st.lists(st.sampled_from(
    ["/", "C=", "CN=", "O=", ",", "+", "\\", '"', " = ", "OU=a/b", "1.2.3=", "=", "#"]),
    max_size=30).map("".join)))
def test_dn_parser_only_refuses_with_its_error(text):
    with contextlib.suppress(DnSyntaxError):
        parse_dn(text)


TOML_VALUES = st.one_of(st.integers(-5, 10**9), st.booleans(), st.text(max_size=30),
                        st.lists(st.text(max_size=20), max_size=3), st.floats(allow_nan=False))

SECTION_KEYS = {
    "server": ["bind", "max_body_bytes", "public_names", "trusted_proxies", "read_timeout",
               "workers", "health_bind", "proxy_protocol"],
    "client_auth": ["mode", "trust", "pins", "issuer_dn", "verify_depth", "forwarded_cert",
                    "advertise_ca_names"],
    "inbox": ["url", "group_commit"],
    "delivery": ["webhook_url", "handler", "max_attempts"],
    "logging": ["format", "level"],
    "nonsense": ["x"],
}


def toml_value(value: object) -> str:
    import json

    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)


@FUZZ
@given(st.dictionaries(st.sampled_from(list(SECTION_KEYS)), st.data(), max_size=3))
def test_config_loader_only_refuses_with_config_errors(tmp_path_factory, sections):
    folder = tmp_path_factory.mktemp("fuzz-config")
    lines = []
    for section, data in sections.items():
        keys = data.draw(st.dictionaries(st.sampled_from(SECTION_KEYS[section]), TOML_VALUES,
                                         max_size=3))
        lines.append(f"[{section}]")
        lines += [f"{key} = {toml_value(value)}" for key, value in keys.items()]
    path = folder / "omgate.toml"
    path.write_text("\n".join(lines) + "\n")
    try:
        load_config(path, {})
    except ConfigError as error:
        assert str(path) in str(error)
