"""The client-certificate gate: decides, caches, and logs ``client_auth.decision``."""

from service.gate.core import ClientAuthGate
from service.gate.record import DecisionOutput, HandshakeEnd, RecordedDecision
from service.gate.verdict import Verdict

__all__ = ["ClientAuthGate", "DecisionOutput", "HandshakeEnd", "RecordedDecision", "Verdict"]
