"""omgate's verdict against OpenSSL's and cryptography's, on generated chains.

hypothesis builds chains of 1 to 4 levels from random combinations of CA flag, key usage,
path length, name constraints, extended key usage, unknown critical extensions, validity,
presented order, duplicates and signatures that do and do not verify. Each is judged by
omgate's policy engine, by ``openssl verify`` (the same anchors, the SSL client purpose,
as the TLS listener's OpenSSL does) and by cryptography's client verifier.

omgate must never accept what either refuses, except for the deliberate differences
listed in ``DIFFERENCES`` (each with its reason); so never what both refuse unless each
refusal is one of them.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from harness import require_executable
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.clientauth import ClientIdentity, Policy, evaluate

EXAMPLES = int(os.environ.get("OMGATE_DIFFERENTIAL_EXAMPLES", "2000"))
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
DAY = dt.timedelta(days=1)
KEYS = [ec.generate_private_key(ec.SECP256R1()) for _ in range(8)]
UNKNOWN = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.55555.7"), b"\x05\x00")
CONSTRAINTS = {
    "permit example.com": x509.NameConstraints([x509.DNSName("example.com")], None),
    "exclude example.com": x509.NameConstraints(None, [x509.DNSName("example.com")]),
}
VALIDITY = {"valid": (NOW - 30 * DAY, NOW + 365 * DAY),
            "expired": (NOW - 400 * DAY, NOW - 35 * DAY),
            "not yet valid": (NOW + 10 * DAY, NOW + 400 * DAY)}


@dataclass(frozen=True)
class Shape:
    """One certificate to build: what it says about itself, and how it is signed."""

    basic: str  # "ca", "ca non-critical", "not ca", "absent"
    path_length: int | None
    key_usage: str  # "sign certificates", "sign data", "absent"
    extended: str  # "none", "clientAuth", "serverAuth"
    constraints: str  # "none" or a CONSTRAINTS key
    critical_unknown: bool
    validity: str
    authority_key_id: bool
    forged_signature: bool
    dns: tuple[str, ...] = ()
    email_san: bool = False
    common_name: str = ""


@dataclass(frozen=True)
class Scenario:
    shapes: tuple[Shape, ...]  # leaf first, root last (a one-level chain: a lone leaf)
    order: tuple[int, ...]  # the presented chain after the leaf, as indexes into shapes
    anchored_at: tuple[int, ...]  # indexes of shapes given as trust anchors
    trust_intermediates: bool
    require_client_auth_eku: bool


def _ca_shape() -> st.SearchStrategy[Shape]:
    return st.builds(
        Shape,
        basic=st.sampled_from(["ca"] * 6 + ["ca non-critical", "not ca", "absent"]),
        path_length=st.sampled_from([None, None, 0, 1]),
        key_usage=st.sampled_from(["sign certificates"] * 4 + ["sign data", "absent"]),
        extended=st.sampled_from(["none"] * 6 + ["clientAuth", "serverAuth"]),
        constraints=st.sampled_from(["none"] * 4 + list(CONSTRAINTS)),
        critical_unknown=st.sampled_from([False] * 6 + [True]),
        validity=st.sampled_from(["valid"] * 8 + ["expired", "not yet valid"]),
        authority_key_id=st.sampled_from([True] * 9 + [False]),
        forged_signature=st.sampled_from([False] * 9 + [True]),
    )


def _leaf_shape() -> st.SearchStrategy[Shape]:
    return st.builds(
        Shape,
        basic=st.sampled_from(["absent", "not ca", "not ca", "ca"]),
        path_length=st.none(),
        key_usage=st.sampled_from(["sign data"] * 4 + ["sign certificates", "absent"]),
        extended=st.sampled_from(["clientAuth"] * 4 + ["serverAuth", "none"]),
        constraints=st.just("none"),
        critical_unknown=st.sampled_from([False] * 12 + [True]),
        validity=st.sampled_from(["valid"] * 8 + ["expired", "not yet valid"]),
        authority_key_id=st.sampled_from([True] * 9 + [False]),
        forged_signature=st.sampled_from([False] * 9 + [True]),
        dns=st.sampled_from([(), ("a.example.com",), ("a.other.org",),
                             ("a.example.com", "b.other.org")]),
        email_san=st.booleans(),
        common_name=st.sampled_from(["a.example.com", "client", "evil.org"]),
    )


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    levels = draw(st.integers(1, 4))
    shapes = (draw(_leaf_shape()), *(draw(_ca_shape()) for _ in range(levels - 1)))
    above = list(range(1, levels))
    order = draw(st.permutations(above)) if draw(st.booleans()) else above
    if above and not draw(st.integers(0, 3)):
        order = order[:-1]  # the root left out, as usual
    if order and not draw(st.integers(0, 5)):
        order = [*order, draw(st.sampled_from(order))]  # a duplicate
    trust_intermediates = levels > 2 and not draw(st.integers(0, 4))
    anchored = tuple(above[-1:] if levels > 1 else ([0] if draw(st.booleans()) else []))
    if trust_intermediates:
        anchored = tuple(above)
    return Scenario(shapes, tuple(order), anchored, trust_intermediates, draw(st.booleans()))


def _name(index: int, shape: Shape) -> x509.Name:
    if index == 0:
        return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Differential"),
                          x509.NameAttribute(NameOID.COMMON_NAME, shape.common_name)])
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"Differential CA {index}")])


def _extensions(shape: Shape) -> list[tuple[x509.ExtensionType, bool]]:
    found: list[tuple[x509.ExtensionType, bool]] = []
    if shape.basic != "absent":
        is_ca = shape.basic.startswith("ca")
        found.append((x509.BasicConstraints(is_ca, shape.path_length if is_ca else None),
                      shape.basic != "ca non-critical"))
    if shape.key_usage != "absent":
        signs = shape.key_usage == "sign certificates"
        found.append((x509.KeyUsage(not signs, False, False, False, False, signs, signs,
                                    False, False), True))
    if shape.extended != "none":
        usage = (ExtendedKeyUsageOID.CLIENT_AUTH if shape.extended == "clientAuth"
                 else ExtendedKeyUsageOID.SERVER_AUTH)
        found.append((x509.ExtendedKeyUsage([usage]), False))
    if shape.constraints != "none":
        found.append((CONSTRAINTS[shape.constraints], True))
    names: list[x509.GeneralName] = [x509.DNSName(dns) for dns in shape.dns]
    if shape.email_san:
        names.append(x509.RFC822Name("ops@example.com"))
    if names:
        found.append((x509.SubjectAlternativeName(names), False))
    if shape.critical_unknown:
        found.append((UNKNOWN, True))
    return found


def build(scenario: Scenario) -> list[x509.Certificate]:
    """The certificates, leaf first; each level's key is KEYS[level]."""
    shapes = scenario.shapes
    built: list[x509.Certificate] = [None] * len(shapes)  # type: ignore[list-item]
    for index in reversed(range(len(shapes))):
        shape = shapes[index]
        issuer = min(index + 1, len(shapes) - 1) if index + 1 < len(shapes) else index
        key, issuer_key = KEYS[index], KEYS[issuer]
        signer = KEYS[-1] if shape.forged_signature else issuer_key
        not_before, not_after = VALIDITY[shape.validity]
        builder = (x509.CertificateBuilder().subject_name(_name(index, shape))
                   .issuer_name(_name(issuer, shapes[issuer]))
                   .public_key(key.public_key()).serial_number(1000 + index)
                   .not_valid_before(not_before).not_valid_after(not_after)
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                                  critical=False))
        if shape.authority_key_id and issuer != index:
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                critical=False)
        for extension, critical in _extensions(shape):
            builder = builder.add_extension(extension, critical=critical)
        built[index] = builder.sign(signer, hashes.SHA256())
    return built


def _pem(certificates: list[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)


@dataclass
class Verdicts:
    omgate: bool
    openssl: bool
    cryptography: bool
    findings: list[str] = field(default_factory=list)
    openssl_says: str = ""
    cryptography_says: str = ""


def judge(scenario: Scenario, openssl: str, folder: Path) -> Verdicts:
    certificates = build(scenario)
    presented = [certificates[0], *(certificates[i] for i in scenario.order)]
    anchors = [certificates[i] for i in scenario.anchored_at]
    policy = Policy(mode="require", anchors=tuple(anchors),
                    trust_intermediates=scenario.trust_intermediates, verify_depth=10,
                    require_client_auth_eku=scenario.require_client_auth_eku)
    decision = evaluate(ClientIdentity(tuple(presented), "tls"), policy, NOW)
    (folder / "leaf.pem").write_bytes(_pem(presented[:1]))
    (folder / "untrusted.pem").write_bytes(_pem(presented[1:]))
    (folder / "anchors.pem").write_bytes(_pem(anchors))
    command = [openssl, "verify", "-no-CApath", "-no-CAstore", "-purpose", "sslclient",
               "-attime", str(int(NOW.timestamp())), "-CAfile", str(folder / "anchors.pem")]
    if len(presented) > 1:
        command += ["-untrusted", str(folder / "untrusted.pem")]
    if scenario.trust_intermediates:
        command.append("-partial_chain")
    result = subprocess.run([*command, str(folder / "leaf.pem")], capture_output=True,
                            text=True, timeout=30, check=False) if anchors else None
    openssl_ok = result is not None and result.returncode == 0
    crypto_ok, crypto_says = _cryptography(presented, anchors, scenario)
    return Verdicts(decision.accepted, openssl_ok, crypto_ok,
                    [f"{f.code}@{f.cert}" for f in decision.findings],
                    (result.stdout + result.stderr) if result else "no anchors", crypto_says)


def _cryptography(presented: list[x509.Certificate], anchors: list[x509.Certificate],
                  scenario: Scenario) -> tuple[bool, str]:
    if not anchors:
        return False, "no anchors"
    leaf_policy = verification.ExtensionPolicy.webpki_defaults_ee().may_be_present(
        x509.SubjectAlternativeName, verification.Criticality.AGNOSTIC, None)
    if not scenario.require_client_auth_eku:
        leaf_policy = leaf_policy.may_be_present(
            x509.ExtendedKeyUsage, verification.Criticality.AGNOSTIC, None)
    try:
        (verification.PolicyBuilder().store(verification.Store(anchors)).time(NOW)
         .extension_policies(ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(),
                             ee_policy=leaf_policy)
         .build_client_verifier().verify(presented[0], presented[1:]))
    except (verification.VerificationError, ValueError) as error:
        return False, str(error)
    return True, "ok"


# Where omgate accepts what one verifier refuses, on purpose.
DIFFERENCES = {
    "leaf_without_client_auth": "with require_client_auth_eku = false, a client certificate "
    "whose extended key usage leaves out clientAuth is a warning (OpenSSL's SSL client "
    "purpose refuses it)",
    "leaf_is_anchor": "a client certificate that is itself a trust anchor is trusted as it "
    "is, as OpenSSL does: no path is left for cryptography's verifier, whose web PKI rules "
    "for end-entity certificates (an authority key identifier, cA=FALSE) it need not meet",
}


def deliberate(scenario: Scenario) -> set[str]:
    leaf = scenario.shapes[0]
    found = set()
    if leaf.extended == "serverAuth" and not scenario.require_client_auth_eku:
        found.add("leaf_without_client_auth")
    if 0 in scenario.anchored_at:
        found.add("leaf_is_anchor")
    return found


@pytest.fixture(scope="module")
def openssl() -> str:
    return require_executable("openssl")


@settings(max_examples=EXAMPLES, deadline=None, database=None,
          derandomize=os.environ.get("OMGATE_DIFFERENTIAL_RANDOM") != "1",
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(scenario=scenarios())
def test_omgate_never_accepts_what_openssl_or_cryptography_refuses(openssl, scenario):
    with tempfile.TemporaryDirectory() as folder:
        verdicts = judge(scenario, openssl, Path(folder))
    if not verdicts.omgate:
        return
    excused = deliberate(scenario)
    # Accepting what both refuse is possible only where each refusal is a listed difference.
    if not verdicts.openssl:
        assert "leaf_without_client_auth" in excused, (verdicts, scenario)
    if not verdicts.cryptography:
        assert "leaf_is_anchor" in excused, (verdicts, scenario)
