"""Nothing a peer sends reaches an operator's terminal as control characters: not through
the console log of a real request, not through `omgate inbox` output of what it stored."""

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
