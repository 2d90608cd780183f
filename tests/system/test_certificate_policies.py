"""Certificate policies (RFC 5280, 6.1.5) hold in every configuration.

cryptography's verifier is skipped on a path whose weak signatures the policy accepts
(``reject_weak_signatures = false``), and OpenSSL processes policies only when asked: a CA
requiring an explicit policy over certificates that carry none was then accepted. omgate
processes policies itself on every anchored path; hypothesis compares it with ``openssl
verify -policy_check`` on paths of random policies, mappings and constraints.
"""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID
from der_certificates import SEQUENCE, element, oid_der
from harness import require_executable
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.clientauth import ClientIdentity, Policy, evaluate

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
KEYS = [rsa.generate_private_key(65537, 2048) for _ in range(5)]
WEAK_KEY = rsa.generate_private_key(65537, 1024)  # noqa: S505 - the weak key accepted
POLICIES = ["1.3.6.1.4.1.55555.1.1", "1.3.6.1.4.1.55555.1.2", "1.3.6.1.4.1.55555.1.3"]
ANY_POLICY = "2.5.29.32.0"


def _name(level: int) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"Policy level {level}")])


def _mappings(pairs: list[tuple[str, str]]) -> x509.UnrecognizedExtension:
    """policyMappings, which cryptography cannot build: encoded here."""
    value = element(SEQUENCE, b"".join(element(SEQUENCE, oid_der(a) + oid_der(b))
                                       for a, b in pairs))
    return x509.UnrecognizedExtension(ExtensionOID.POLICY_MAPPINGS, value)


def build(levels: list[dict], keys: list[rsa.RSAPrivateKey] = KEYS) -> list[x509.Certificate]:
    """Root first: ``levels[0]`` is the self-signed root, the last the client's leaf."""
    built: list[x509.Certificate] = []
    for index, level in enumerate(levels):
        issuer = max(index - 1, 0)
        leaf = index == len(levels) - 1
        builder = (x509.CertificateBuilder().subject_name(_name(index))
                   .issuer_name(_name(issuer)).public_key(keys[index].public_key())
                   .serial_number(1000 + index)
                   .not_valid_before(NOW - dt.timedelta(days=1))
                   .not_valid_after(NOW + dt.timedelta(days=90))
                   .add_extension(x509.BasicConstraints(ca=not leaf, path_length=None),
                                  critical=True)
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(
                       keys[index].public_key()), critical=False))
        if leaf:
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        if level.get("policies") is not None:
            builder = builder.add_extension(x509.CertificatePolicies([
                x509.PolicyInformation(x509.ObjectIdentifier(oid), None)
                for oid in level["policies"]]), critical=False)
        explicit, inhibit_mapping = level.get("explicit"), level.get("inhibit_mapping")
        if explicit is not None or inhibit_mapping is not None:
            builder = builder.add_extension(x509.PolicyConstraints(explicit, inhibit_mapping),
                                            critical=True)
        if level.get("inhibit_any") is not None:
            builder = builder.add_extension(x509.InhibitAnyPolicy(level["inhibit_any"]),
                                            critical=True)
        if level.get("mappings"):
            builder = builder.add_extension(_mappings(level["mappings"]), critical=True)
        built.append(builder.sign(keys[issuer], hashes.SHA256()))
    return built


def omgate_refuses_policies(chain: list[x509.Certificate], **policy: object) -> bool:
    decision = evaluate(ClientIdentity(tuple(reversed(chain[1:])), "forwarded"),
                        Policy(mode="require", anchors=(chain[0],), verify_depth=8,
                               **policy), NOW)  # type: ignore[arg-type]
    return any("ertificate polic" in f.message or "policyMappings" in f.message
               for f in decision.findings if f.severity == "error")


def openssl_refuses_policies(chain: list[x509.Certificate], folder: Path) -> bool:
    root, untrusted, leaf = folder / "root.pem", folder / "untrusted.pem", folder / "leaf.pem"
    root.write_bytes(chain[0].public_bytes(Encoding.PEM))
    untrusted.write_bytes(b"".join(c.public_bytes(Encoding.PEM) for c in chain[1:-1]))
    leaf.write_bytes(chain[-1].public_bytes(Encoding.PEM))
    result = subprocess.run(
        # any policy acceptable, as RFC 5280's default user-initial-policy-set (OpenSSL's
        # default, no set, fails every path that requires an explicit policy)
        [require_executable("openssl"), "verify", "-policy_check", "-policy", ANY_POLICY,
         "-CAfile", str(root),
         "-untrusted", str(untrusted), "-attime", str(int(NOW.timestamp())), str(leaf)],
        capture_output=True, text=True, check=False)
    if result.returncode == 0:
        return False
    assert "polic" in result.stdout + result.stderr, result.stdout + result.stderr
    return True


def test_an_explicit_policy_is_required_even_where_weak_signatures_are_accepted():
    """The review's chain: a CA with a critical requireExplicitPolicy = 0, no certificate
    policies anywhere, a weak key on the path and reject_weak_signatures = false (so
    cryptography's verifier does not run)."""
    chain = build([{}, {"explicit": 0}, {}], [KEYS[0], WEAK_KEY, KEYS[2]])
    assert omgate_refuses_policies(chain, reject_weak_signatures=False)
    assert omgate_refuses_policies(chain)


def test_a_noncritical_policy_constraints_extension_is_refused():
    chain = build([{}, {"policies": [ANY_POLICY]}, {"policies": [POLICIES[0]]}])
    assert not omgate_refuses_policies(chain)
    intermediate = chain[1]
    builder = (x509.CertificateBuilder().subject_name(intermediate.subject)
               .issuer_name(intermediate.issuer).public_key(KEYS[1].public_key())
               .serial_number(77).not_valid_before(NOW - dt.timedelta(days=1))
               .not_valid_after(NOW + dt.timedelta(days=90))
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
               .add_extension(x509.PolicyConstraints(1, None), critical=False))
    chain[1] = builder.sign(KEYS[0], hashes.SHA256())
    decision = evaluate(ClientIdentity((chain[2], chain[1]), "forwarded"),
                        Policy(mode="require", anchors=(chain[0],)), NOW)
    assert any("not marked critical" in f.message for f in decision.findings)


def _level(draw: st.DrawFn, leaf: bool) -> dict:
    level: dict = {}
    if draw(st.integers(0, 5)):
        level["policies"] = draw(st.lists(st.sampled_from([*POLICIES, ANY_POLICY]),
                                          min_size=1, max_size=3, unique=True))
    if not leaf:
        if not draw(st.integers(0, 2)):
            level["explicit"] = draw(st.sampled_from([0, 1]))
        if not draw(st.integers(0, 3)):
            level["inhibit_mapping"] = draw(st.sampled_from([0, 1]))
        if not draw(st.integers(0, 3)):
            level["inhibit_any"] = draw(st.sampled_from([0, 1]))
        listed = [oid for oid in level.get("policies", []) if oid != ANY_POLICY]
        if listed and not draw(st.integers(0, 2)):
            # mapping only policies the certificate asserts: OpenSSL also lets a mapping
            # stand for an assertion when the certificate asserts only anyPolicy, even
            # where anyPolicy is inhibited, which RFC 5280 (6.1.4 (b)) does not; omgate
            # follows RFC 5280 there (stricter)
            level["mappings"] = draw(st.lists(st.tuples(st.sampled_from(listed),
                                                        st.sampled_from(POLICIES)),
                                              min_size=1, max_size=2, unique=True))
    elif not draw(st.integers(0, 4)):
        level["explicit"] = 0
    return level


@st.composite
def policy_paths(draw: st.DrawFn) -> list[dict]:
    count = draw(st.integers(1, 3))  # CAs below the root
    return [{}, *(_level(draw, False) for _ in range(count)), _level(draw, True)]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(levels=policy_paths())
def test_omgate_processes_policies_as_openssl_does(levels, tmp_path_factory):
    chain = build(levels)
    folder = tmp_path_factory.mktemp("policies")
    assert omgate_refuses_policies(chain) == openssl_refuses_policies(chain, folder), levels
