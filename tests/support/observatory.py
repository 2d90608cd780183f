"""A mixed run for the chain observatory's tests: real clients presenting a valid, an
expired, a misordered and an untrusted chain, and none, to a real omgate."""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from client_pki import ClientCase, ClientPki, _write, client_leaf
from cryptography import x509
from harness import PAYLOADS, SOAP_HEADERS, RunningServer, is_ack, run_omgate

from service.clientauth import chain_fingerprint
from service.clientauth.summary import fingerprint
from service.inbox.chains import NO_CERTIFICATE
from service.tools.pki import Issued

BODY = (PAYLOADS / "amplabs-create_account.xml").read_bytes()
# chain label -> connections (one acknowledged message each) in the mixed run
MIXED_RUN = {"valid": 3, "expired": 2, "misordered": 1, "untrusted": 1, None: 2}


def misordered_case(client_pki: ClientPki, folder: Path) -> ClientCase:
    """A leaf of its own, sent as [leaf, root, intermediate]: the issuers out of order."""
    leaf = client_leaf(client_pki.intermediate, "misordered.client.test")
    root = Issued(client_pki.root.certificate, client_pki.root.key)
    return _write(folder, "misordered", leaf, root, client_pki.intermediate)


@dataclass(frozen=True)
class MixedRun:
    cases: dict[str, ClientCase]

    def key(self, label: str | None) -> str:
        """The registry key of a case's chain, as presented."""
        if label is None:
            return NO_CERTIFICATE
        chain = x509.load_pem_x509_certificates(self.cases[label].chain.read_bytes())
        return chain_fingerprint(tuple(chain))

    def leaf_sha256(self, label: str) -> str:
        return fingerprint(x509.load_pem_x509_certificate(self.cases[label].leaf.read_bytes()))


def mixed_cases(client_pki: ClientPki, folder: Path) -> MixedRun:
    cases = {label: client_pki.cases[label] for label in ("valid", "expired", "untrusted")}
    cases["misordered"] = misordered_case(client_pki, folder)
    return MixedRun(cases)


def send_mixed_run(server: RunningServer, run: MixedRun,
                   counts: dict[str | None, int] | None = None) -> None:
    """Each case's connections, one acknowledged message each (request mode)."""
    for label, count in (counts or MIXED_RUN).items():
        for _ in range(count):
            response = server.post(BODY, cert=run.cases[label] if label else None,
                                   headers=SOAP_HEADERS)
            assert is_ack(response), (label, response.text)


def chains_json(config: Path, *args: str) -> list[dict[str, Any]]:
    result = run_omgate("chains", "list", "--json", "--config", str(config), *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def pin_table(config: Path, prefix: str) -> dict[str, Any]:
    """The [client_auth] lines `omgate chains pin` prints, read as TOML."""
    result = run_omgate("chains", "pin", prefix, "--config", str(config))
    assert result.returncode == 0, result.stderr
    return tomllib.loads(result.stdout)["client_auth"]
