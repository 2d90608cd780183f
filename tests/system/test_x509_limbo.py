"""omgate's verdict on x509-limbo, the C2SP path-validation suite (a pinned copy).

Each applicable case is judged as ``omgate inspect`` judges a chain (the policy engine,
cryptography's verifier and OpenSSL's opinion taken offline), in ``require`` mode:

- the suite's expected result is met on all but the cases listed in ``DISAGREEMENTS``,
  each with the reason (OpenSSL or cryptography refuse them too, or omgate keeps a rule
  RFC 5280 does not require);
- no chain is accepted that ``openssl verify`` or cryptography's verifier refuses;
- no case costs more than a second (the suite's denial-of-service cases included).

Applicable: every case except the ``webpki::`` ones (the CA/Browser Forum's rules for
publicly trusted server certificates), the ``online::`` ones (web sites' server chains)
and those that expect a server-only extended key usage. A case's trusted certificates
are its trust anchors (``trust_intermediates`` when one of them is not self-signed), its
``max_chain_depth`` is OpenSSL's depth (omgate's ``verify_depth`` counts the anchor too),
its expected DNS peer name is ``client_auth.allowed_names``, and a client validation's
clientAuth usage is required.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import time
import warnings
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import verification
from harness import require_executable

from service.clientauth import ClientIdentity, Decision, Policy
from service.clientauth.chain import is_self_signed
from service.clientauth.verifier import _extension_policies
from service.tls.opinion import evaluate_offline

# the suite's deliberately non-positive serial numbers, which cryptography warns about
pytestmark = pytest.mark.filterwarnings(
    "ignore::cryptography.utils.CryptographyDeprecationWarning")

SUITE = Path(__file__).parent.parent / "fixtures" / "x509-limbo" / "limbo.json"
NOT_APPLICABLE_FAMILIES = ("webpki::", "online::")
MAX_SECONDS = 1.0

# Cases where omgate's verdict is not the suite's, and why. Each refusal here is shared by
# OpenSSL or cryptography, or is a rule omgate keeps on purpose.
DISAGREEMENTS = {
    "crl::issuer-no-keyusage-extension":
        "cryptography's verifier refuses a CA certificate without a key usage extension",
    "pathlen::validation-ignores-pathlen-in-leaf":
        "a CA certificate as the client's: its key usage allows no digital signature, and "
        "OpenSSL's SSL client purpose and cryptography's verifier refuse it",
    "rfc5280::ca-as-leaf": "the same: OpenSSL and cryptography refuse it as a client's",
    "pathlen::self-issued-certs-pathlen":
        "cryptography's verifier refuses the path through a self-issued intermediate",
    "pathlen::max-chain-depth-1-self-issued":
        "OpenSSL and cryptography count a self-issued intermediate against the depth",
    "rfc5280::nc::nc-forbids-alternate-chain-ica":
        "OpenSSL builds one path and refuses it (its issuer is not found): the listener's "
        "own OpenSSL would refuse the handshake's chain",
    "rfc5280::nc::nc-forbids-same-chain-ica":
        "OpenSSL builds the path through the constrained CA and refuses it",
    "rfc5280::nc::permitted-dns-match-noncritical":
        "accepted: a name constraint not marked critical is what the CA/Browser Forum "
        "allows and OpenSSL's own configuration writes by default, and OpenSSL and "
        "cryptography accept it; refusing it would lock out such a CA's senders",
}
# Cases omgate accepts although ``openssl verify`` refuses, on purpose.
OPENSSL_DIFFERS = {
    "rfc5280::validity::notafter-exact":
        "OpenSSL counts the second of notAfter as expired; RFC 5280 and cryptography count "
        "it valid, and so does omgate (which tolerates clock_skew_seconds beyond it anyway)",
    "rfc5280::validity::notafter-fractional":
        "the same second: certificate times have whole seconds",
}


@dataclass(frozen=True)
class LimboCase:
    id: str
    expected: str  # "SUCCESS" or "FAILURE"
    kind: str  # "SERVER" or "CLIENT"
    chain: tuple[x509.Certificate, ...]  # leaf first, then the untrusted intermediates
    trusted: tuple[x509.Certificate, ...]
    at: dt.datetime
    max_chain_depth: int | None
    peer_name: str | None
    crls: tuple[x509.CertificateRevocationList, ...]
    client_auth: bool


def _certificates(pems: list[str]) -> tuple[x509.Certificate, ...]:
    with warnings.catch_warnings():  # the suite's non-positive serials, on purpose
        warnings.simplefilter("ignore")
        return tuple(x509.load_pem_x509_certificate(pem.encode()) for pem in pems)


@cache
def applicable_cases() -> tuple[LimboCase, ...]:
    cases = []
    for case in json.loads(SUITE.read_text())["testcases"]:
        if case["id"].startswith(NOT_APPLICABLE_FAMILIES):
            continue
        if "serverAuth" in case["extended_key_usage"]:
            continue
        peer = case["expected_peer_name"]
        cases.append(LimboCase(
            id=case["id"], expected=case["expected_result"], kind=case["validation_kind"],
            chain=_certificates([case["peer_certificate"], *case["untrusted_intermediates"]]),
            trusted=_certificates(case["trusted_certs"]),
            at=(dt.datetime.fromisoformat(case["validation_time"]) if case["validation_time"]
                else dt.datetime.now(dt.UTC)),
            max_chain_depth=case["max_chain_depth"],
            peer_name=peer["value"] if peer and peer["kind"] == "DNS" else None,
            crls=tuple(x509.load_pem_x509_crl(crl.encode()) for crl in case["crls"]),
            client_auth="clientAuth" in case["extended_key_usage"],
        ))
    return tuple(cases)


def policy_for(case: LimboCase) -> Policy:
    partial = not all(is_self_signed(certificate) for certificate in case.trusted)
    depth = case.max_chain_depth
    return Policy(
        mode="require",
        anchors=case.trusted if partial else tuple(c for c in case.trusted
                                                   if is_self_signed(c)),
        trust_intermediates=partial,
        verify_depth=depth + 1 if depth is not None else 8,
        allowed_names=(case.peer_name,) if case.peer_name else (),
        require_client_auth_eku=case.client_auth,
        crls=case.crls,
        clock_skew=dt.timedelta(0),
    )


def judged(case: LimboCase) -> tuple[Decision, float]:
    started = time.thread_time()
    decision = evaluate_offline(ClientIdentity(case.chain, "forwarded"), policy_for(case),
                                case.at)
    return decision, time.thread_time() - started


def openssl_accepts(case: LimboCase, folder: Path) -> bool:
    """``openssl verify`` with the case's anchors, time, depth and CRLs, for the purpose the
    case validates (a server case's leaf says serverAuth)."""
    files = {"trusted": case.trusted, "untrusted": case.chain[1:], "leaf": case.chain[:1]}
    for label, certificates in files.items():
        (folder / f"{label}.pem").write_bytes(b"".join(c.public_bytes(Encoding.PEM)
                                                       for c in certificates))
    command = [require_executable("openssl"), "verify", "-partial_chain",
               "-purpose", "sslclient" if case.kind == "CLIENT" else "sslserver",
               "-CAfile", str(folder / "trusted.pem"), "-attime", str(int(case.at.timestamp()))]
    if case.chain[1:]:
        command += ["-untrusted", str(folder / "untrusted.pem")]
    if case.max_chain_depth is not None:
        command += ["-verify_depth", str(case.max_chain_depth)]
    if case.crls:
        (folder / "crls.pem").write_bytes(b"".join(crl.public_bytes(Encoding.PEM)
                                                   for crl in case.crls))
        command += ["-crl_check", "-CRLfile", str(folder / "crls.pem")]
    return subprocess.run([*command, str(folder / "leaf.pem")], capture_output=True,
                          check=False).returncode == 0


def cryptography_accepts(case: LimboCase) -> bool:
    """cryptography's client verifier with the extension policies omgate gives it."""
    ca_policy, leaf_policy = _extension_policies(policy_for(case))
    builder = (verification.PolicyBuilder().store(verification.Store(list(case.trusted)))
               .time(case.at).extension_policies(ca_policy=ca_policy, ee_policy=leaf_policy))
    if case.max_chain_depth is not None:
        builder = builder.max_chain_depth(case.max_chain_depth)
    try:
        builder.build_client_verifier().verify(case.chain[0], list(case.chain[1:]))
    except verification.VerificationError as error:
        # not a verdict: it does not evaluate directoryName constraints at all
        return "unsupported directoryName constraint" in str(error)
    return True


@pytest.fixture(scope="module")
def verdicts() -> dict[str, tuple[Decision, float]]:
    return {case.id: judged(case) for case in applicable_cases()}


def test_the_suite_is_the_pinned_one():
    cases = applicable_cases()
    assert len(cases) == 137
    assert not (set(DISAGREEMENTS) | set(OPENSSL_DIFFERS)) - {case.id for case in cases}


@pytest.mark.parametrize("case", applicable_cases(), ids=lambda case: case.id)
def test_omgate_meets_the_suite(case, verdicts):
    decision, _seconds = verdicts[case.id]
    got = "SUCCESS" if decision.accepted else "FAILURE"
    if case.id in DISAGREEMENTS:
        assert got != case.expected, f"{case.id} now agrees: drop it from DISAGREEMENTS"
    else:
        assert got == case.expected, decision.findings


def test_omgate_disagrees_on_few_cases():
    assert len(DISAGREEMENTS) <= len(applicable_cases()) * 7 // 107


@pytest.mark.parametrize("case", applicable_cases(), ids=lambda case: case.id)
def test_omgate_never_accepts_what_openssl_or_cryptography_refuse(case, verdicts, tmp_path):
    decision, _seconds = verdicts[case.id]
    if decision.accepted:
        assert openssl_accepts(case, tmp_path) or case.id in OPENSSL_DIFFERS, \
            "openssl verify refuses it"
        assert cryptography_accepts(case), "cryptography's verifier refuses it"


def test_no_case_costs_more_than_a_second(verdicts):
    slow = {case_id: seconds for case_id, (_decision, seconds) in verdicts.items()
            if seconds > MAX_SECONDS}
    assert not slow
