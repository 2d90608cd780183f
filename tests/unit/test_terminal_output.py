"""JSON log lines stay exact JSON and ASCII whatever a peer sent, rendered in-process by
omgate's own logging setup (its console output: tests/system/test_terminal_output_system.py)."""

from __future__ import annotations

import json


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


def test_lines_logged_in_one_turn_of_the_loop_leave_in_one_flush_by_its_end():
    import asyncio
    import io

    from service.logs import _LineWriter

    class CountingStream(io.StringIO):
        flushes = 0

        def flush(self) -> None:
            self.flushes += 1
            self.flushed = self.getvalue()
            super().flush()

    stream = CountingStream()
    writer = _LineWriter(stream)
    writer.msg("before the loop")
    assert stream.flushes == 1  # no loop in this thread: at once

    async def one_turn() -> tuple[int, int]:
        for number in range(5):
            writer.msg(f"line {number}")
        during = stream.flushes
        await asyncio.sleep(0)  # the turn ends
        return during, stream.flushes

    during, after = asyncio.run(one_turn())
    assert (during, after) == (1, 2)
    assert stream.flushed.splitlines() == ["before the loop", *(f"line {n}" for n in range(5))]


def test_lines_of_one_turn_leave_in_one_system_write_on_an_unbuffered_stream(tmp_path):
    """PYTHONUNBUFFERED (the container sets it) makes standard error a text layer over the
    raw file, writing through: each write to it is a system call."""
    import asyncio
    import io

    from service.logs import _LineWriter, flush_log_lines

    class CountingFile(io.FileIO):
        writes = 0

        def write(self, data) -> int:  # type: ignore[no-untyped-def]
            self.writes += 1
            return super().write(data)

    raw = CountingFile(tmp_path / "stderr", "wb")
    stream = io.TextIOWrapper(raw, encoding="utf-8", write_through=True)
    writer = _LineWriter(stream)

    async def two_turns() -> list[int]:
        seen = []
        for turn in range(2):
            for number in range(5):
                writer.msg(f"turn {turn} line {number}")
            seen.append(raw.writes)
            await asyncio.sleep(0)  # the turn ends
            seen.append(raw.writes)
        return seen

    assert asyncio.run(two_turns()) == [0, 1, 1, 2]

    async def logged_then_loop_gone() -> None:
        writer.msg("last line")

    asyncio.run(logged_then_loop_gone())  # its loop may close before the turn's flush
    writer.msg("from a thread without a loop")
    flush_log_lines()
    lines = (tmp_path / "stderr").read_text().splitlines()
    assert lines == [*(f"turn {t} line {n}" for t in range(2) for n in range(5)),
                     "last line", "from a thread without a loop"]
