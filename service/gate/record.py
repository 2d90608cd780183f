"""One decision as recorded, and the interface the gate hands it to (its outputs).

The gate owns both: the decision line, the metrics and the chain registry each receive a
:class:`RecordedDecision` through :class:`DecisionOutput`; none of them is imported here,
so the outputs point down at the gate and never the other way.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal, Protocol

from service.clientauth import ClientIdentity
from service.clientauth.model import Outcome
from service.gate.verdict import Verdict

# How the TLS handshake behind a decision ended: "refused" by omgate's own verify step.
HandshakeEnd = Literal["complete", "refused", "failed"]


@dataclass(frozen=True)
class RecordedDecision:
    """A decision on one identity, with where it was made; ``identity.handshake`` holds
    the handshake's facts."""

    identity: ClientIdentity
    verdict: Verdict
    outcome: Outcome  # "unproven" when the handshake failed (not by omgate's refusal)
    at: dt.datetime
    handshake: HandshakeEnd = "complete"
    endpoint: str | None = None  # an endpoint's own policy; None: the listener's
    proxy: str | None = None  # the trusted proxy that relayed the connection or request
    hook_problems: tuple[str, ...] = ()  # what the OpenSSL hooks could not do


class DecisionOutput(Protocol):
    """Where a recorded decision goes (the log line, the metrics, the chain registry)."""

    def decided(self, decision: RecordedDecision) -> None: ...
