"""Doubling delays with a ceiling, shared by delivery retries and worker restarts."""

from __future__ import annotations

# 2.0 ** 1024 overflows a float; any cap an operator can configure is reached long before 2 ** 64.
_MAX_DOUBLINGS = 64


def capped_doubling(first: float, step: int, cap: float) -> float:
    """``first`` at step 1, doubling at each step after, never more than ``cap``."""
    doublings = min(max(step - 1, 0), _MAX_DOUBLINGS)
    return min(cap, first * 2.0**doublings)
