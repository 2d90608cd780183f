"""``omgate inspect PEMFILE``: the policy engine's analysis of a chain file, before a deploy.

The certificates are analysed in the order the file lists them, as if a client had
presented them, against the configuration's ``[client_auth]`` rules (or an
endpoint's, with ``--endpoint``); ``--trust`` replaces the trust anchors.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any, TextIO

from service.certfiles import CertificateFileError, load_certificates
from service.clientauth import ClientIdentity, Decision, Policy, summarize
from service.config import Config
from service.exitcodes import UsageError
from service.policy_loader import PolicyLoader
from service.report import write_certificates, write_findings
from service.terminal import json_text
from service.tls.opinion import evaluate_offline


def inspect_policy(config: Config, endpoint: str | None, trust: Path | None) -> Policy:
    rules = config.client_auth.rules
    if endpoint is not None:
        matching = [e for e in config.endpoints if e.path == endpoint]
        if not matching:
            paths = ", ".join(e.path for e in config.endpoints)
            raise UsageError(f"--endpoint {endpoint}: no [[endpoints]] path of {config.source} "
                             f"is that ({paths})")
        rules = matching[0].client_auth or rules
    if trust is not None:
        try:  # --trust is the command line's: an error names it, not [client_auth] trust
            load_certificates(trust, "--trust")
        except CertificateFileError as error:
            raise UsageError(str(error)) from None
        rules = dataclasses.replace(rules, trust=(trust.resolve(),))
    # a certificate is being judged: report what enforcement would do with it
    return PolicyLoader(config).policy(rules, mode="require")


def report(identity: ClientIdentity, decision: Decision, now: dt.datetime) -> dict[str, Any]:
    return {
        "outcome": decision.outcome,
        "chain": [summarize(certificate, now) for certificate in identity.chain],
        "chain_sha256": identity.chain_sha256,
        "findings": [finding.to_json() for finding in decision.findings],
    }


def _text(document: dict[str, Any], out: TextIO) -> None:
    write_certificates(document["chain"], out)
    out.write("\n")
    write_findings(document["findings"], out)
    verdict = "accepted" if document["outcome"] == "accept" else "REFUSED"
    count = len(document["findings"])
    out.write(f"\n{verdict} under this policy ({count} finding{'s' * (count != 1)})\n")


def inspect_chain(pem: Path, config: Config, out: TextIO, *, endpoint: str | None,
                  trust: Path | None, as_json: bool, now: dt.datetime | None = None) -> int:
    try:
        chain = tuple(load_certificates(pem, ""))
    except CertificateFileError as error:
        raise UsageError(str(error)) from None
    now = now or dt.datetime.now(dt.UTC)
    identity = ClientIdentity(chain, "forwarded")
    decision = evaluate_offline(identity, inspect_policy(config, endpoint, trust), now)
    document = report(identity, decision, now)
    if as_json:
        out.write(json_text(document, indent=2) + "\n")
    else:
        _text(document, out)
    return 0 if decision.accepted else 1
