"""hypercorn's part in serving: the configuration every listener is served with.

omgate's connections run on its own driver (:mod:`service.listeners.connection`), which
owns the socket, the TLS records and every deadline; from hypercorn, the ASGI server the
project was specified with, it takes the public parts that fit: its ``Config`` (timeouts,
keep-alive limit, the app's queue, its error log, the headers of every answer), the
validation of an app's answer headers (``build_and_validate_headers``) and the reading
of a socket's address (``parse_socket_addr``). No private symbol of hypercorn is used;
tests/unit/test_tripwires.py names the public ones, and pyproject.toml caps its range.
"""

from __future__ import annotations

import logging
import time
from wsgiref.handlers import format_date_time

from hypercorn.config import Config as HypercornConfig

from service.listeners.framing import (
    DEFAULT_LIMITS,
    MAX_HEAD_BYTES,
    AnswerRefusal,
    HeadLimits,
    bodiless,
)

KEEP_ALIVE_SECONDS = 15


class Http11Config(HypercornConfig):
    """hypercorn's configuration, with what omgate's connections add: the limits of a
    request head, how a refused request is answered, and the Date header of answers
    formatted once a second (hypercorn formats it for every answer)."""

    include_date_header = False
    _second = -1
    _date = b""

    def __init__(self, head_limits: HeadLimits = DEFAULT_LIMITS,
                 answer_refusal: AnswerRefusal = bodiless) -> None:
        super().__init__()
        self.head_limits = head_limits
        self.answer_refusal = answer_refusal

    def answer_headers(self) -> list[tuple[bytes, bytes]]:
        """The headers every answer carries: the date, and hypercorn's own (server)."""
        now = int(time.time())
        if now != self._second:
            self._second, self._date = now, format_date_time(now).encode("ascii")
        return [(b"date", self._date), *self.response_headers("h11")]


def hypercorn_config(*, read_timeout: float, graceful_timeout: float,
                     idle_timeout: float = KEEP_ALIVE_SECONDS,
                     head_limits: HeadLimits = DEFAULT_LIMITS,
                     answer_refusal: AnswerRefusal = bodiless) -> Http11Config:
    config = Http11Config(head_limits, answer_refusal)
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.read_timeout = int(read_timeout)
    config.keep_alive_timeout = idle_timeout
    config.graceful_timeout = graceful_timeout
    # the core's bound on an incomplete head, behind the head limits it checks first
    config.h11_max_incomplete_size = MAX_HEAD_BYTES
    return config
