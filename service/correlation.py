"""Correlation ids: the random id each refusal and acknowledgement carries, which the
``om.rejected`` log line and the ``X-Correlation-Id`` header both name."""

from __future__ import annotations

import os
import secrets


class _RandomPool:
    """Random bytes from the OS, fetched 4 KiB at a time (one system call per 512 ids);
    emptied in a forked child, so that workers never share what they hand out."""

    SIZE = 4096

    def __init__(self) -> None:
        self._bytes = b""
        self._used = 0
        os.register_at_fork(after_in_child=self.empty)

    def empty(self) -> None:
        self._bytes, self._used = b"", 0

    def take(self, count: int) -> bytes:
        if self._used + count > len(self._bytes):
            self._bytes, self._used = secrets.token_bytes(self.SIZE), 0
        taken = self._bytes[self._used:self._used + count]
        self._used += count
        return taken


_RANDOM = _RandomPool()


def new_correlation_id() -> str:
    return _RANDOM.take(8).hex()
