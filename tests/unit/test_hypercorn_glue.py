"""What omgate's connections take from hypercorn, and rely on it doing.

tests/unit/test_tripwires.py names every name of hypercorn omgate uses and checks its
shape; this checks what they do, so that a change in hypercorn fails here with a message
naming it, before any end-to-end test fails for an obscure reason.
"""

from __future__ import annotations

import inspect
import socket

import pytest
from hypercorn.config import Config
from hypercorn.utils import build_and_validate_headers, parse_socket_addr

from service.listeners.hypercorn_glue import hypercorn_config


def test_every_answer_carries_a_date_and_hypercorns_server_header():
    source = inspect.getsource(Config.response_headers)
    assert "if self.include_date_header:" in source
    config = hypercorn_config(read_timeout=5, graceful_timeout=5)
    assert [name for name, _value in config.response_headers("h11")] == [b"server"]
    headers = config.answer_headers()
    assert [name for name, _value in headers] == [b"date", b"server"]
    assert headers[0][1].endswith(b" GMT") and headers[1][1] == b"hypercorn-h11"


def test_the_limits_a_connection_takes_from_hypercorns_configuration():
    config = hypercorn_config(read_timeout=7, graceful_timeout=5, idle_timeout=3)
    assert (config.read_timeout, config.keep_alive_timeout) == (7, 3)
    assert config.keep_alive_max_requests >= 100  # hypercorn's default: 1000
    assert config.max_app_queue_size >= 1
    assert config.root_path == ""


def test_answer_headers_are_stripped_and_pseudo_headers_refused():
    # what would split an answer (CR, LF, NUL) the core refuses (tests/unit/test_h1.py)
    assert build_and_validate_headers([(b" x-a ", b" 1 ")]) == [(b"x-a", b"1")]
    with pytest.raises(ValueError, match="Pseudo"):
        build_and_validate_headers([(b":status", b"200")])


def test_the_socket_addresses_the_scope_gives():
    assert parse_socket_addr(socket.AF_INET, ("127.0.0.1", 5)) == ("127.0.0.1", 5)
    assert parse_socket_addr(socket.AF_INET6, ("::1", 5, 0, 0)) == ("::1", 5)
    assert parse_socket_addr(socket.AF_UNIX, "/run/omgate.sock") is None
