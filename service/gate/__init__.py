"""The client-certificate gate: decides, caches, and logs ``client_auth.decision``."""

from service.gate.core import ClientAuthGate, HandshakeEnd
from service.gate.verdict import Verdict

__all__ = ["ClientAuthGate", "HandshakeEnd", "Verdict"]
