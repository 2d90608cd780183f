"""JSON log lines stay exact JSON and ASCII whatever a peer sent, rendered in-process by
omgate's own logging setup (its console output: tests/system/test_terminal_output_system.py)."""

from __future__ import annotations

import json

import pytest


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


@pytest.mark.parametrize("buffered", [False, True], ids=["PYTHONUNBUFFERED", "buffered"])
def test_a_line_is_in_the_file_when_logging_it_returns_on_a_loop_or_not(tmp_path, buffered):
    """A request's lines must be in the log before its answer leaves: a line reaches the
    file (the system, not a buffer) before ``msg`` returns, whatever standard error's
    buffering (PYTHONUNBUFFERED, which the container sets, makes it write through)."""
    import asyncio
    import io

    from service.logs import _LineWriter

    path = tmp_path / "stderr"
    raw = io.FileIO(path, "wb")
    binary = io.BufferedWriter(raw) if buffered else raw
    stream = io.TextIOWrapper(binary, encoding="utf-8", write_through=not buffered)
    writer = _LineWriter(stream)
    writer.msg("before the loop")
    assert path.read_text() == "before the loop\n"

    async def answered() -> str:
        writer.msg("om.accepted")
        return path.read_text()  # what a reader sees once the answer has left

    assert asyncio.run(answered()) == "before the loop\nom.accepted\n"


# what a peer may put in a value it controls (a path, a forwarded address): a line of its
# own, a field named again, a terminal's controls
FORGED_LINE = '/om"\n{"level":"error","event":"client_auth.decision","outcome":"accept"}\x1b[2J'


def _logged_lines(configure) -> list[str]:
    """Every kind of event omgate logs, through the configuration ``configure`` makes."""
    import io
    import logging

    import structlog

    saved, root = structlog.get_config(), logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stream = io.StringIO()
    configure(stream)
    try:
        log = structlog.get_logger("omgate").bind(bound="b", session_id="never shown")
        with structlog.contextvars.bound_contextvars(correlation_id="c1", peer="from context",
                                                     SessionId="never shown"):
            log.info("om.accepted", peer="given", new=1, nested={"a": [1, "é\u202e"]},
                     endpoint=FORGED_LINE)
            log.warning("given.level", level="bogus", timestamp="bogus")
            log.warn("warned")
            try:
                raise ZeroDivisionError("boom")
            except ZeroDivisionError:
                log.exception("failed")
                log.error("failed.again", exc_info=True)
            log.info(None, without="an event name")
            log.debug("debug.line", private_key="never shown", big=2**70)
    finally:
        structlog.configure(**saved)
        root.handlers[:] = handlers
        root.setLevel(level)
    return stream.getvalue().splitlines()


def test_omgate_json_lines_are_what_structlogs_processors_write():
    """omgate renders its own JSON events in one step (a line is written for every message):
    the same lines, keys in the same order, as structlog's public processors one after
    another: context variables, level, UTC ISO time, secrets redacted, the traceback, time,
    level and event first."""
    import re

    import structlog

    from service.logs import _drop_secret_keys, _json_line, configure_logging

    def with_structlogs_chain(stream):
        configure_logging("json", "debug", stream=stream)
        structlog.configure(processors=[
            structlog.contextvars.merge_contextvars, structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True), _drop_secret_keys,
            structlog.processors.format_exc_info,
            lambda _logger, _method, event: {
                **{key: event.pop(key) for key in ("timestamp", "level", "event")
                   if key in event}, **event},
            structlog.processors.JSONRenderer(serializer=_json_line)])

    ours = _logged_lines(lambda stream: configure_logging("json", "debug", stream=stream))
    reference = _logged_lines(with_structlogs_chain)
    assert len(ours) == len(reference) == 7
    stamp = re.compile(r'^\{"timestamp":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z",')
    assert all(stamp.match(line) for line in ours)
    parsed = [(json.loads(a), json.loads(b)) for a, b in zip(ours, reference, strict=True)]
    for line, expected in parsed:
        line["timestamp"] = expected["timestamp"]
        assert list(line.items()) == list(expected.items())
    first, given, warned, failed, *_ = (line for line, _ in parsed)
    assert (first["peer"], first["bound"], first["correlation_id"]) == ("given", "b", "c1")
    assert first["session_id"] == first["SessionId"] == "<redacted>"
    assert (first["event"], first["level"], first["endpoint"]) == (
        "om.accepted", "info", FORGED_LINE)  # one line, whatever the value holds
    assert (given["level"], warned["level"], failed["level"]) == ("warning", "warning", "error")
    assert "ZeroDivisionError: boom" in failed["exception"]
