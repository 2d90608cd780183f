"""A decision under one policy, and whether that policy's mode makes it a refusal."""

from __future__ import annotations

from dataclasses import dataclass

from service.clientauth import Decision
from service.clientauth.model import Mode


@dataclass(frozen=True)
class Verdict:
    decision: Decision
    mode: Mode
    enforced: bool

    @property
    def refuse(self) -> bool:
        return self.enforced and not self.decision.accepted
