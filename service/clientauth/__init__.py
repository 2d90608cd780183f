"""Client-certificate policy: pure functions over presented chains. No I/O, no logging."""

from service.clientauth.model import (
    MODES,
    ClientIdentity,
    Decision,
    Finding,
    HandshakeFacts,
    Policy,
    VerifyResult,
    chain_fingerprint,
)
from service.clientauth.policy import evaluate
from service.clientauth.summary import fingerprint, summarize

__all__ = [
    "MODES",
    "ClientIdentity",
    "Decision",
    "Finding",
    "HandshakeFacts",
    "Policy",
    "VerifyResult",
    "chain_fingerprint",
    "evaluate",
    "fingerprint",
    "summarize",
]
