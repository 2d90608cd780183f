"""Client-certificate policy: pure functions over presented chains. No I/O, no logging."""

from service.clientauth.dn import DistinguishedName, DnSyntaxError, parse_dn
from service.clientauth.model import (
    MODES,
    ClientIdentity,
    Decision,
    Finding,
    HandshakeFacts,
    Mode,
    Policy,
    UnreadableCertificate,
    VerifyResult,
    chain_fingerprint,
)
from service.clientauth.names import name_matches
from service.clientauth.pins import Pin, PinSyntaxError, parse_pin, pin_for_certificate
from service.clientauth.policy import evaluate
from service.clientauth.summary import fingerprint, summarize

__all__ = [
    "MODES",
    "ClientIdentity",
    "Decision",
    "DistinguishedName",
    "DnSyntaxError",
    "Finding",
    "HandshakeFacts",
    "Mode",
    "Pin",
    "PinSyntaxError",
    "Policy",
    "UnreadableCertificate",
    "VerifyResult",
    "chain_fingerprint",
    "evaluate",
    "fingerprint",
    "name_matches",
    "parse_dn",
    "parse_pin",
    "pin_for_certificate",
    "summarize",
]
