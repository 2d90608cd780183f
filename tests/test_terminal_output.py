"""Nothing a peer sends reaches an operator's terminal as control characters: not through
the console log of a real request, not through `omgate inbox` output of what it stored.
JSON stays exact JSON."""

from __future__ import annotations

import json
import time

import httpx
from harness import is_ack, run_omgate, ssl_context
from messages import envelope, notification

# What a terminal acts on: ESC sequences (OSC sets the title, CSI clears the screen and
# moves the cursor), BEL, a carriage return, their one-byte C1 forms, DEL, and the
# bidirectional overrides and isolates that make text read in another order.
ACTING = ("\x1b]", "\x1b[2J", "\x1b[1;1H", "\x1b[1C", "\x07", "\r", "\x9b", "\x9d", "\x9c",
          "\x7f", "\u202e", "\u2066")


def test_a_path_full_of_terminal_escapes_is_logged_escaped_on_the_console(omgate_server):
    server = omgate_server(env={"OMGATE_LOGGING__FORMAT": "console"})
    # a title, a cleared screen and the cursor home to paint a forged accepted line (spaced
    # by cursor moves: a value with spaces would be quoted), then the same in C1 controls
    # and a right-to-left override
    path = ("/%1b]0;omgate-pwned%07%1b[2J%1b[1;1H2026-12-01T00:00:00Z%1b[1C[info%1b[5C]"
            "%1b[1Com.accepted%c2%9b2J%c2%9d0;title%c2%9c%e2%80%aedesrever%e2%81%a6")
    answer = httpx.get(server.url + path, verify=ssl_context(server.ca_path))
    assert answer.status_code == 404
    deadline = time.monotonic() + 5
    while "unknown_endpoint" not in (text := server.log_path.read_text()):
        assert time.monotonic() < deadline, text
        time.sleep(0.1)
    [line] = [line for line in text.splitlines() if "unknown_endpoint" in line]
    for acting in ACTING:
        assert acting not in text, f"{acting!r} reached the terminal"
    assert "om.accepted" not in text.replace(line, "")  # no line of the path's making
    assert (r"/\x1b]0;omgate-pwned\x07\x1b[2J\x1b[1;1H2026-12-01T00:00:00Z\x1b[1C[info"
            r"\x1b[5C]\x1b[1Com.accepted\x9b2J\x9d0;title\x9c\u202edesrever\u2066") in line
    # the fault says it the same way, and is well-formed XML
    assert r"\x1b]0;omgate-pwned\x07" in answer.text


def test_inbox_output_shows_stored_controls_escaped_and_stays_exact_json(omgate_server):
    server = omgate_server()
    # XML allows DEL, the C1 controls and the bidirectional formatting characters
    value = "Acme\u009b2J\u009d0;pwned\u009c \u202eevil\u202c\x7f \u2066x\u2069 caf\u00e9"
    body = envelope(notification(fields=f"<sf:Name>{value}</sf:Name>"))
    assert is_ack(server.post(body))
    config = str(server.config_path)
    listed = run_omgate("inbox", "list", "--config", config)
    shown = run_omgate("inbox", "show", "1", "--config", config)
    exported = run_omgate("inbox", "export", "--config", config)
    for result in (listed, shown, exported):
        assert result.returncode == 0, result.stderr
        for acting in ACTING:
            assert acting not in result.stdout, f"{acting!r} reached the terminal"
        assert "caf\u00e9" in result.stdout  # other text stays readable
    assert json.loads(listed.stdout)[0]["fields"]["Name"] == value
    assert json.loads(shown.stdout)["fields"]["Name"] == value
    assert json.loads(exported.stdout.splitlines()[0])["fields"]["Name"] == value


def test_json_log_lines_are_ascii_whatever_a_peer_sent():
    """orjson renders omgate's JSON lines; a line holding any non-ASCII character (a bidi
    override, a C1 control) is written by json.dumps instead, escaped, as before; so is one
    holding DEL, which orjson leaves raw. No line holds a raw control character."""
    import io
    import logging

    import structlog

    from service.logs import configure_logging, get_logger

    saved, root = structlog.get_config(), logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stream = io.StringIO()
    configure_logging("json", "info", stream=stream)
    try:
        log = get_logger("omgate")
        sent = "evil\u202e\x9b[2Jname\x1b]0;title\x07"
        log.info("om.rejected", endpoint=sent, peer="127.0.0.1:1", big=2**70, ratio=0.5)
        log.info("om.accepted", org_id="00D000000000001AAA", new=1)
        log.info("om.rejected", endpoint="/om/\x7f\x1b[2J")  # ASCII, but controls
    finally:
        structlog.configure(**saved)
        root.handlers[:] = handlers
        root.setLevel(level)
    lines = stream.getvalue().splitlines()
    assert all(line.isascii() for line in lines)
    assert not [line for line in lines if any(ord(c) < 0x20 or c == "\x7f" for c in line)]
    rejected, accepted, ascii_controls = (json.loads(line) for line in lines)
    assert ascii_controls["endpoint"] == "/om/\x7f\x1b[2J"
    assert (rejected["event"], rejected["endpoint"], rejected["big"]) == (
        "om.rejected", sent, 2**70)
    assert list(accepted)[:3] == ["timestamp", "level", "event"]
    assert (accepted["org_id"], accepted["new"]) == ("00D000000000001AAA", 1)


def test_a_value_json_cannot_hold_never_fails_the_code_that_logged():
    """Lines are rendered where the event is logged: a value JSON cannot hold (a structure
    that contains itself, keys that are not text) still gives a line, not an exception."""
    import io
    import logging

    import structlog

    from service.logs import configure_logging, get_logger

    saved, root = structlog.get_config(), logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stream = io.StringIO()
    configure_logging("json", "info", stream=stream)
    circular: list = []
    circular.append(circular)
    try:
        get_logger("omgate").info("odd.values", circular=circular, keyed={("a", 1): "b"})
    finally:
        structlog.configure(**saved)
        root.handlers[:] = handlers
        root.setLevel(level)
    [line] = stream.getvalue().splitlines()
    assert json.loads(line)["event"] == "odd.values"
