"""``omgate chains``: the registry of client chains seen, from the command line.

``list`` shows every chain seen in a window, ``show`` one chain as ``inspect`` would plus
where and when it was seen, ``simulate`` replays the registry against a candidate
configuration, and ``pin`` prints the lines that admit exactly one chain.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path
from typing import Any, TextIO

from service.clientauth import ClientIdentity, Mode
from service.clientauth.names import identity_names
from service.clientauth.summary import fingerprint, spki_sha256, validity_words
from service.config import Config
from service.exitcodes import EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE
from service.inbox.chains import ChainOutcome, ChainRecord, to_pem
from service.observatory.simulate import CandidatePolicies, ChainVerdict, Simulation, simulate
from service.observatory.views import (
    ChainRow,
    chain_row,
    leaf_of,
    record_identity,
    select,
    valid_prefix,
)
from service.policy_loader import PolicyLoader
from service.report import write_certificates, write_findings
from service.terminal import escape_controls, json_text
from service.tls.opinion import evaluate_offline
from service.tools.inbox import open_configured
from service.tools.inspect import inspect_policy, report

ALL_CHAINS = 1_000_000  # what `chains list` reads at most


async def _read(config: Config, since: dt.timedelta | None = None,
                prefix: str | None = None) -> list[ChainRecord]:
    inbox = await open_configured(config)
    try:
        if prefix is not None:
            return await inbox.chains_by_prefix(prefix)
        return await inbox.chains(since=dt.datetime.now(dt.UTC) - (since or dt.timedelta(0)),
                                  limit=ALL_CHAINS)
    finally:
        await inbox.close()


def read_chains(config: Config, since: dt.timedelta) -> list[ChainRecord]:
    return asyncio.run(_read(config, since))


def listener_judged(config: Config) -> set[str]:
    """The endpoints whose clients the listener's policy decides."""
    return {item.path for item in config.endpoints if item.client_auth is None}


# -- list ---------------------------------------------------------------------------------

def _write_row(row: ChainRow, out: TextIO) -> None:
    record = row.record
    out.write(f"{row.short}  {row.outcome:<12}  {record.connections} connections, "
              f"{record.messages} messages"
              + (f", {record.unproven} unproven" if record.unproven else "")
              + f"  ({record.source})\n")
    out.write(f"  leaf     {escape_controls(row.leaf_subject)}\n")
    if row.issuer:
        out.write(f"  issuer   {escape_controls(row.issuer)}\n")
    if row.days_left is not None:
        out.write(f"  validity {validity_words(row.days_left)}\n")
    out.write(f"  seen     {row.first_seen} .. {row.last_seen}\n")
    if row.main_finding is not None:
        finding = row.main_finding
        out.write(f"  finding  {finding.code} ({finding.severity}): "
                  f"{escape_controls(finding.message)}\n")


def list_chains(config: Config, out: TextIO, *, since: dt.timedelta,
                outcome: ChainOutcome | None, endpoint: str | None, as_json: bool) -> int:
    records = select(read_chains(config, since), outcome=outcome, endpoint=endpoint,
                     listener_judged=listener_judged(config))
    now = dt.datetime.now(dt.UTC)
    rows = [chain_row(record, now) for record in records]
    if as_json:
        out.write(json.dumps([row.to_json() for row in rows], indent=2) + "\n")
        return EXIT_OK
    for row in rows:
        _write_row(row, out)
    out.write(f"{len(rows)} chain{'s' * (len(rows) != 1)} seen\n")
    return EXIT_OK


# -- show ---------------------------------------------------------------------------------

def find_chain(config: Config, prefix: str, err: TextIO, command: str) -> ChainRecord | None:
    """The one chain ``prefix`` names; None (said on ``err``) when none or several do."""
    if not valid_prefix(prefix):
        err.write(f"omgate chains {command}: {prefix!r} is not a fingerprint prefix (at least "
                  "4 hex digits, or none)\n")
        return None
    matches = asyncio.run(_read(config, prefix=prefix.replace(":", "")))
    if len(matches) == 1:
        return matches[0]
    if not matches:
        err.write(f"omgate chains {command}: no recorded chain starts with {prefix}\n")
    else:
        err.write(f"omgate chains {command}: {prefix} names several chains: "
                  + ", ".join(record.chain_sha256[:16] for record in matches) + "\n")
    return None


def chain_document(config: Config, record: ChainRecord, now: dt.datetime) -> dict[str, Any]:
    """What `inspect` says of the chain under the configuration, and where it was seen."""
    identity = record_identity(record)
    decision = evaluate_offline(identity, inspect_policy(config, None, None), now)
    return {**report(identity, decision, now), "seen": chain_row(record, now).to_json()}


def _write_seen(seen: dict[str, Any], out: TextIO) -> None:
    out.write(f"\nseen {seen['first_seen']} .. {seen['last_seen']} ({seen['source']}): "
              f"{seen['connections']} connections, {seen['messages']} messages, "
              f"{seen['unproven']} unproven handshakes\n")
    out.write(f"  last peer {seen['last_peer']}"
              + (f" through proxy {seen['last_proxy']}" if seen["last_proxy"] else "") + "\n")
    for endpoint in seen["endpoints"]:
        where = endpoint["endpoint"] or "(the listener, per connection)"
        line = f"  {where}: {endpoint['messages']} messages"
        decision = endpoint["decision"]
        if decision is not None:
            codes = ", ".join(finding["code"] for finding in decision["findings"]) or "none"
            line += (f"; last decision {decision['outcome']} in {decision['mode']} mode at "
                     f"{decision['decided_at']} under policy {decision['policy_sha256'][:12]} "
                     f"(findings: {codes})")
        out.write(line + "\n")


def show_chain(config: Config, out: TextIO, err: TextIO, prefix: str, *, pem: bool,
               as_json: bool, html: Path | None) -> int:
    record = find_chain(config, prefix, err, "show")
    if record is None:
        return EXIT_USAGE if not valid_prefix(prefix) else EXIT_PROBLEMS
    if pem:
        out.write(to_pem(record.certificates))
        return EXIT_OK
    now = dt.datetime.now(dt.UTC)
    document = chain_document(config, record, now)
    if html is not None:
        from service.console.report import standalone_report

        try:
            html.write_text(standalone_report(config, record, now), encoding="utf-8")
        except OSError as error:
            err.write(f"omgate chains show: cannot write {html}: {error.strerror}\n")
            return EXIT_USAGE
        err.write(f"wrote {html}\n")
    if as_json:
        out.write(json.dumps(document, indent=2) + "\n")
        return EXIT_OK
    out.write(f"chain {record.chain_sha256}\n")
    write_certificates(document["chain"], out)
    out.write("\n")
    write_findings(document["findings"], out)
    verdict = "accepted" if document["outcome"] == "accept" else "REFUSED"
    out.write(f"\n{verdict} under this configuration's rules in require mode\n")
    _write_seen(document["seen"], out)
    return EXIT_OK


# -- simulate -----------------------------------------------------------------------------

def candidate_policies(config: Config, mode: Mode | None) -> CandidatePolicies:
    loader = PolicyLoader(config)
    return CandidatePolicies(
        loader.policy(config.client_auth.rules, mode=mode),
        {item.path: loader.policy(item.client_auth, mode=mode)
         for item in config.endpoints if item.client_auth is not None})


def _verdict_word(verdict: ChainVerdict) -> str:
    if verdict.refused:
        return "REFUSED"
    return "would_reject" if verdict.would_reject else "accepted"


def _write_verdict(verdict: ChainVerdict, now: dt.datetime, out: TextIO) -> None:
    row = chain_row(verdict.record, now)
    record = verdict.record
    out.write(f"{_verdict_word(verdict):<12} {row.short}  {escape_controls(row.leaf_subject)}: "
              f"{record.connections} connections, {record.messages} messages\n")
    if not verdict.decision.accepted:
        write_findings([finding for finding in verdict.decision.findings
                        if finding.severity == "error"], out)


def _totals_line(label: str, simulation: Simulation, verdicts: list[ChainVerdict]) -> str:
    totals = simulation.totals(verdicts)
    return (f"{label}: {totals.chains} chain{'s' * (totals.chains != 1)} "
            f"({totals.connections} connections, {totals.messages} messages)\n")


def simulate_chains(config: Config, out: TextIO, *, since: dt.timedelta,
                    mode: Mode | None) -> int:
    policies = candidate_policies(config, mode)
    now = dt.datetime.now(dt.UTC)
    simulation = simulate(read_chains(config, since), policies, now)
    out.write(f"omgate chains simulate: {config.source}, mode {policies.listener.mode}\n\n")
    for verdict in simulation.proven:
        _write_verdict(verdict, now, out)
    out.write("\n" + _totals_line("would have been accepted", simulation, simulation.accepted))
    out.write(_totals_line("would have been refused", simulation, simulation.refused))
    unlogged = [verdict for verdict in simulation.proven if verdict.would_reject]
    if unlogged:
        out.write(_totals_line("would fail the rules (logged only, in request mode)",
                               simulation, unlogged))
    if simulation.unproven:
        out.write(f"not counted: {len(simulation.unproven)} chain(s) only ever presented in "
                  "handshakes that did not complete\n")
    return EXIT_PROBLEMS if simulation.refused else EXIT_OK


# -- pin ----------------------------------------------------------------------------------

def _toml_string(text: str) -> str:
    # a JSON string is a TOML basic string; json_text writes controls as \u escapes
    return json_text(text)


def pin_lines(identity: ClientIdentity) -> list[str]:
    """Configuration lines that admit exactly this chain's client certificate."""
    leaf = leaf_of(identity)
    if leaf is None:
        raise ValueError("the chain has no readable client certificate")
    pins = [f"sha256:{fingerprint(leaf)}", f"spki:{spki_sha256(leaf)}"]
    names = [name for name in identity_names(leaf) if name and not any(c.isspace() for c in name)]
    lines = [
        f"# Admit exactly {escape_controls(leaf.subject.rfc4514_string())} (keep these with "
        "your trust anchors)",
        "[client_auth]",
        "pins = [" + ", ".join(map(_toml_string, pins)) + "]",
        f"issuer_dn = {_toml_string(leaf.issuer.rfc4514_string())}",
        f"subject_dn = {_toml_string(leaf.subject.rfc4514_string())}",
    ]
    if names:
        lines.append("allowed_names = [" + ", ".join(map(_toml_string, names)) + "]")
    else:
        lines.append("# allowed_names: the certificate carries no DNS name to list")
    return lines


def pin_chain(config: Config, out: TextIO, err: TextIO, prefix: str) -> int:
    record = find_chain(config, prefix, err, "pin")
    if record is None:
        return EXIT_USAGE if not valid_prefix(prefix) else EXIT_PROBLEMS
    identity = record_identity(record)
    decision = evaluate_offline(identity, inspect_policy(config, None, None),
                                dt.datetime.now(dt.UTC))
    errors = [finding for finding in decision.findings if finding.severity == "error"]
    if errors:
        err.write(f"omgate chains pin: chain {record.chain_sha256[:12]} has errors under this "
                  "configuration; omgate never suggests pinning a chain that does not "
                  "verify:\n")
        write_findings(errors, err)
        return EXIT_PROBLEMS
    try:
        out.write("\n".join(pin_lines(identity)) + "\n")
    except ValueError as error:
        err.write(f"omgate chains pin: {error}\n")
        return EXIT_PROBLEMS
    return EXIT_OK
