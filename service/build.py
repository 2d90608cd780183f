"""What this omgate is: its version, and the Python and OpenSSL it runs on.

Shown by ``omgate --version`` and exported as the ``omgate_build_info`` metric. The
OpenSSL is the one the TLS front door uses (pyOpenSSL's, through cryptography), not
necessarily the one Python's ``ssl`` module links.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from functools import cache
from importlib import metadata

from OpenSSL import SSL

DISTRIBUTION = "omgate"


@dataclass(frozen=True)
class BuildInfo:
    version: str
    python: str
    openssl: str

    def line(self) -> str:
        return f"omgate {self.version} (Python {self.python}, OpenSSL {self.openssl})"


def _openssl_version() -> str:
    text = SSL.OpenSSL_version(SSL.OPENSSL_VERSION).decode()  # "OpenSSL 3.5.4 30 Sep 2025"
    words = text.split()
    return words[1] if len(words) > 1 and words[0] == "OpenSSL" else text


@cache
def build_info() -> BuildInfo:
    try:
        version = metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        version = "unknown"
    return BuildInfo(version, platform.python_version(), _openssl_version())
