"""Certificates whose extensions cannot be read: a finding, never an exception.

A client chooses every byte of the chain it presents. A repeated extension, a name
constraint of an IP address without its mask, a truncated or garbled extension value, or a
name type nobody supports must end as ``unreadable_certificate`` for that certificate, in
the policy engine, in the summaries logged for it, and in ``omgate inspect``; never as a
traceback, and never read as absent (which could let a constraint pass).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtensionOID, NameOID
from der_certificates import RawExtension, certificate_with, element
from harness import run_omgate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.clientauth import ClientIdentity, Policy, evaluate, summarize
from service.clientauth.presented import load_chain

NOW = dt.datetime.now(dt.UTC)
ROOT_KEY = ec.generate_private_key(ec.SECP256R1())
ROOT_NAME = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "malformed CA")])
ROOT = (x509.CertificateBuilder().subject_name(ROOT_NAME).issuer_name(ROOT_NAME)
        .public_key(ROOT_KEY.public_key()).serial_number(1)
        .not_valid_before(NOW - dt.timedelta(days=2))
        .not_valid_after(NOW + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                     False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ROOT_KEY.public_key()),
                       critical=False)
        .sign(ROOT_KEY, hashes.SHA256()))
POLICY = Policy(mode="require", anchors=(ROOT,))

SAN = x509.SubjectAlternativeName([x509.DNSName("client.example.com")]).public_bytes()
# nameConstraints permitting an iPAddress subtree of 4 bytes: an address without its mask
IP_WITHOUT_MASK = element(0x30, element(0xA0, element(0x30, element(0x87, bytes([127, 0, 0,
                                                                                 1])))))
# a subjectAltName holding an x400Address, a name type cryptography does not support
X400_NAME = element(0x30, element(0xA3, element(0x30, b"")))

KNOWN = {
    ExtensionOID.SUBJECT_ALTERNATIVE_NAME: SAN,
    ExtensionOID.BASIC_CONSTRAINTS: x509.BasicConstraints(ca=True, path_length=0)
    .public_bytes(),
    ExtensionOID.KEY_USAGE: x509.KeyUsage(True, False, False, False, False, False, False,
                                          False, False).public_bytes(),
    ExtensionOID.EXTENDED_KEY_USAGE: x509.ExtendedKeyUsage(
        [x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]).public_bytes(),
    ExtensionOID.NAME_CONSTRAINTS: x509.NameConstraints(
        [x509.DNSName("example.com")], [x509.IPAddress(
            __import__("ipaddress").ip_network("10.0.0.0/8"))]).public_bytes(),
    ExtensionOID.AUTHORITY_KEY_IDENTIFIER: x509.AuthorityKeyIdentifier(
        b"\x01" * 20, None, None).public_bytes(),
    ExtensionOID.SUBJECT_KEY_IDENTIFIER: x509.SubjectKeyIdentifier(b"\x02" * 20)
    .public_bytes(),
    ExtensionOID.CERTIFICATE_POLICIES: x509.CertificatePolicies(
        [x509.PolicyInformation(x509.ObjectIdentifier("2.5.29.32.0"), None)]).public_bytes(),
    ExtensionOID.POLICY_CONSTRAINTS: x509.PolicyConstraints(0, None).public_bytes(),
    ExtensionOID.INHIBIT_ANY_POLICY: x509.InhibitAnyPolicy(0).public_bytes(),
    ExtensionOID.CRL_DISTRIBUTION_POINTS: x509.CRLDistributionPoints([x509.DistributionPoint(
        [x509.UniformResourceIdentifier("http://crl.example.com/a.crl")], None, None, None)])
    .public_bytes(),
    ExtensionOID.AUTHORITY_INFORMATION_ACCESS: x509.AuthorityInformationAccess(
        [x509.AccessDescription(x509.oid.AuthorityInformationAccessOID.CA_ISSUERS,
                                x509.UniformResourceIdentifier("http://ca.example.com/a"))])
    .public_bytes(),
}


@st.composite
def damaged(draw: st.DrawFn, value: bytes) -> bytes:
    """``value`` truncated, extended, with bytes flipped, or replaced altogether."""
    kind = draw(st.sampled_from(["truncate", "flip", "append", "replace", "as is"]))
    if kind == "truncate" and value:
        return value[:draw(st.integers(0, len(value) - 1))]
    if kind == "flip" and value:
        position = draw(st.integers(0, len(value) - 1))
        return value[:position] + bytes([value[position] ^ draw(st.integers(1, 255))]) \
            + value[position + 1:]
    if kind == "append":
        return value + draw(st.binary(min_size=1, max_size=8))
    if kind == "replace":
        return draw(st.binary(max_size=40))
    return value


@st.composite
def raw_extensions(draw: st.DrawFn) -> list[RawExtension]:
    chosen = draw(st.lists(st.sampled_from(sorted(KNOWN, key=lambda oid: oid.dotted_string)),
                           min_size=1, max_size=4))
    extensions = [RawExtension(oid.dotted_string, draw(damaged(KNOWN[oid])),
                               draw(st.booleans())) for oid in chosen]
    if draw(st.booleans()):  # the same extension twice
        extensions.append(extensions[0])
    return extensions


def _assert_judged(certificate: x509.Certificate, position: str) -> None:
    """Everything that reads a presented chain reads this one without raising, and a
    certificate whose extensions cannot be read is refused as unreadable."""
    leaf = certificate if position == "leaf" else certificate_with(
        [RawExtension(ExtensionOID.SUBJECT_ALTERNATIVE_NAME.dotted_string, SAN)],
        issuer="malformed", signer=ec.generate_private_key(ec.SECP256R1()))
    chain = (leaf,) if position == "leaf" else (leaf, certificate)
    presented = load_chain([c.public_bytes(Encoding.DER) for c in chain])
    decision = evaluate(presented.identity("tls", "192.0.2.1"), POLICY, NOW)
    direct = evaluate(ClientIdentity(chain, "forwarded"), POLICY, NOW)
    for item in chain:  # logged, and shown by inspect, for every certificate presented
        summarize(item, NOW)
    try:
        certificate.extensions  # noqa: B018 - the oracle: can cryptography read them at all
    except Exception:  # noqa: BLE001 - whatever it raises, the certificate is unreadable
        index = chain.index(certificate)
        for judged in (decision, direct):
            assert judged.outcome == "reject"
            assert any(f.code == "unreadable_certificate" and f.cert == index
                       for f in judged.findings), judged.findings


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(extensions=raw_extensions(), position=st.sampled_from(["leaf", "issuer"]))
def test_no_extension_a_client_can_write_raises_out_of_the_policy(extensions, position):
    _assert_judged(certificate_with(extensions), position)


CASES = {
    "duplicated extension": [RawExtension(ExtensionOID.SUBJECT_ALTERNATIVE_NAME.dotted_string,
                                          SAN)] * 2,
    "ip constraint without mask": [RawExtension(ExtensionOID.NAME_CONSTRAINTS.dotted_string,
                                                IP_WITHOUT_MASK, critical=True)],
    "x400 name": [RawExtension(ExtensionOID.SUBJECT_ALTERNATIVE_NAME.dotted_string,
                               X400_NAME)],
}


@pytest.mark.parametrize("position", ["leaf", "issuer"])
@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_each_known_malformation_is_an_unreadable_certificate(case, position):
    _assert_judged(certificate_with(CASES[case]), position)


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_inspect_names_an_unreadable_certificate_instead_of_a_traceback(case, tmp_path: Path):
    pem = tmp_path / "chain.pem"
    pem.write_bytes(certificate_with(CASES[case]).public_bytes(Encoding.PEM))
    trust = tmp_path / "root.pem"
    trust.write_bytes(ROOT.public_bytes(Encoding.PEM))
    config = tmp_path / "omgate.toml"
    config.write_text("[server]\nbind = []\n")
    result = run_omgate("inspect", str(pem), "--config", str(config), "--trust", str(trust),
                        "--json")
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 1, result.stderr
    findings = json.loads(result.stdout)["findings"]
    assert any(f["code"] == "unreadable_certificate" and f["cert"] == 0 for f in findings)
