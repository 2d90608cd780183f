"""Printing findings and certificate summaries for people (text) and machines (JSON).

Names and messages quote certificates someone else made: every value is shown with its
control and bidirectional formatting characters escaped.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TextIO

from service.clientauth import Finding
from service.clientauth.summary import validity_words
from service.terminal import escape_controls as shown

SEVERITY_MARK = {"error": "ERROR", "warning": "warn ", "info": "info "}


def write_certificates(summaries: Iterable[dict[str, Any]], out: TextIO,
                       indent: str = "") -> None:
    for index, summary in enumerate(summaries):
        out.write(f"{indent}certificate {index}: {shown(summary['subject'])}\n")
        out.write(f"{indent}  issuer     {shown(summary['issuer'])}\n")
        out.write(f"{indent}  valid      {summary['not_before']} .. {summary['not_after']} "
                  f"({validity_words(summary['days_left'])})\n")
        out.write(f"{indent}  key        {summary['key']}, signed "
                  f"{summary['signature_algorithm']}\n")
        out.write(f"{indent}  sha256     {summary['sha256']}\n")
        out.write(f"{indent}  spki       {summary['spki_sha256']}\n")
        if summary["sans"]:
            out.write(f"{indent}  names      {shown(', '.join(summary['sans']))}\n")


def write_findings(findings: Iterable[Finding | dict[str, Any]], out: TextIO) -> None:
    for finding in findings:
        item = finding.to_json() if isinstance(finding, Finding) else finding
        where = "" if item["cert"] is None else f" [certificate {item['cert']}]"
        out.write(f"{SEVERITY_MARK[item['severity']]} {item['code']}{where}: "
                  f"{shown(item['message'])}\n      fix: {shown(item['hint'])}\n")


def count_line(findings: list[Finding], extra_errors: int = 0) -> str:
    """"N errors, M warnings"; ``extra_errors`` counts failures that are not findings."""
    errors = sum(f.severity == "error" for f in findings) + extra_errors
    warnings = sum(f.severity == "warning" for f in findings)
    return f"{errors} error{'s' * (errors != 1)}, {warnings} warning{'s' * (warnings != 1)}"
