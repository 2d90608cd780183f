"""The hardened SOAP parser's memory, measured in a process of its own."""

from __future__ import annotations

import subprocess
import sys

from harness import ROOT
from soap_parse_cases import billion_laughs


def test_billion_laughs_memory_stays_bounded():
    """Measured in a fresh process, so the suite's own memory does not hide a blow-up."""
    code = (
        "import resource, sys\n"
        "from service.soap import parse_message, SoapFaultError\n"
        "body = sys.stdin.buffer.read()\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "for _ in range(50):\n"
        "    try: parse_message(body)\n"
        "    except SoapFaultError as error: assert error.reason == 'dtd_forbidden'\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, input=billion_laughs(12),
                            capture_output=True, check=True, timeout=60)
    assert int(result.stdout) < 20 * 1024  # KiB
