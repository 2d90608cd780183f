"""structlog setup: JSON lines for machines, a readable console for people.

Every library's stdlib logging goes through the same renderer, so hypercorn's
messages and omgate's events share one format. omgate's own events skip stdlib
logging's records and handlers (a record, a copy of it and a caller lookup for
every line) and are written to the stream directly, rendered by orjson; in JSON, one
processor does what the chain of stdlib's records does step by step, to the same line.
Logs go to standard error; standard output belongs to command results (``omgate inbox
list``). The console format shows every control and bidirectional formatting character
escaped: many values (paths, certificate names) were written by peers.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import logging
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any, TextIO

import orjson
import structlog
from structlog.dev import Column, ConsoleRenderer, KeyValueColumnFormatter
from structlog.typing import EventDict, Processor, WrappedLogger

from service.report import write_findings
from service.terminal import escape_controls

# httpx logs every webhook request's URL (its query may hold a token) at INFO; the
# delivery.* events say what happened instead.
_QUIET_LIBRARIES = ("httpx", "httpcore")
# Keys that could carry a message's session id; dropped from every event as a backstop.
_SECRET_KEYS = frozenset({"session_id", "sessionid", "SessionId", "private_key"})


def _drop_secret_keys(_logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
    for key in _SECRET_KEYS & event.keys():
        event[key] = "<redacted>"
    return event


_HEAD = ("timestamp", "level", "event")


class _UtcClock:
    """The time as structlog's ISO UTC TimeStamper writes it
    (``datetime.now(UTC).isoformat()``, ``+00:00`` as ``Z``), with the part up to the
    second made once a second: a line is written for every message."""

    def __init__(self) -> None:
        self._second: tuple[int, str] = (-1, "")  # a second and its text, replaced whole

    def now(self) -> str:
        second, nanoseconds = divmod(time.time_ns(), 1_000_000_000)
        made, text = self._second  # (one read: another thread may replace it meanwhile)
        if made != second:
            text = dt.datetime.fromtimestamp(second, dt.UTC).replace(tzinfo=None).isoformat()
            self._second = (second, text)
        microseconds = nanoseconds // 1000
        return f"{text}.{microseconds:06d}Z" if microseconds else f"{text}Z"


_CLOCK = _UtcClock()


def _stamp(_logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
    event["timestamp"] = _CLOCK.now()
    return event


def _event_first(_logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
    """Put time, level and event name first, so a JSON line reads left to right."""
    head: dict[str, Any] = {key: event.pop(key) for key in _HEAD if key in event}
    return {**head, **event}


def _escape_tracebacks(_logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
    """The console renderer writes these blocks of lines as they are."""
    for key in ("exception", "stack"):
        if isinstance(event.get(key), str):
            event[key] = escape_controls(event[key], keep="\n")
    return event


def _escaping(column: Column) -> Column:
    formatter = column.formatter
    if not isinstance(formatter, KeyValueColumnFormatter):
        return column  # the level: omgate's own words
    shown = formatter.value_repr
    return Column(column.key, dataclasses.replace(
        formatter, value_repr=lambda value: escape_controls(shown(value))))


class _ConsoleForPeople(ConsoleRenderer):
    """structlog's console renderer, with a ``client_auth.decision`` shown the way
    ``omgate inspect`` shows findings: the outcome on the line, then each finding with its
    code, message and fix. (The certificates and handshake details stay in JSON logs.)"""

    def __call__(self, logger: Any, name: str, event: Any) -> str:
        if event.get("event") != "client_auth.decision":
            return super().__call__(logger, name, event)
        findings = event.pop("findings", [])
        for detail in ("chain", "tls"):
            event.pop(detail, None)
        block = io.StringIO()
        write_findings(findings, block)
        line = super().__call__(logger, name, event)
        return line + "".join(f"\n    {text}" for text in block.getvalue().splitlines())


def _console_renderer() -> ConsoleRenderer:
    renderer = _ConsoleForPeople(exception_formatter=structlog.dev.plain_traceback)
    renderer.columns = [_escaping(column) for column in renderer.columns]
    return renderer


def _fallback(value: Any) -> Any:
    """What JSON cannot hold, as structlog's JSONRenderer writes it."""
    structlog_form = getattr(value, "__structlog__", None)
    return structlog_form() if structlog_form is not None else repr(value)


_ORJSON_OPTIONS = (orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME
                   | orjson.OPT_PASSTHROUGH_DATACLASS)


def _json_line(event: Mapping[str, Any], **_ignored: Any) -> str:
    """One JSON line, ASCII only: every control, bidirectional and other non-ASCII character
    escaped (json.dumps's ensure_ascii), so that a terminal showing the log shows them as
    text. orjson writes the line unless it holds non-ASCII or DEL (then json.dumps escapes
    it)."""
    try:
        line = orjson.dumps(event, default=_fallback, option=_ORJSON_OPTIONS)
    except (orjson.JSONEncodeError, TypeError):  # an integer past 64 bits, say
        return _stdlib_json_line(event)
    # orjson escapes what JSON must (below 0x20) and leaves DEL raw, as it may
    return line.decode() if line.isascii() and b"\x7f" not in line else _stdlib_json_line(event)


def _stdlib_json_line(event: Mapping[str, Any]) -> str:
    try:
        return json.dumps(event, default=_fallback, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError):  # a value that contains itself, say
        # rendered where it was logged: a line with each value's repr, never an exception
        return json.dumps({str(key): value if isinstance(value, str) else repr(value)
                           for key, value in event.items()}, separators=(",", ":"))


def _uses_json(log_format: str, stream: TextIO) -> bool:
    return log_format == "json" or (log_format == "auto" and not stream.isatty())


def _rendering(log_format: str, stream: TextIO) -> list[Processor]:
    if _uses_json(log_format, stream):  # JSON escapes every control character itself
        return [structlog.processors.JSONRenderer(serializer=_json_line)]
    return [_escape_tracebacks, _console_renderer()]


def _omgate_json_line(logger: WrappedLogger, method: str, event: EventDict) -> str:
    """omgate's own events in JSON: in one step what the shared processors, format_exc_info,
    _event_first and the renderer do one after another for stdlib's records (the same
    line; each step was a call, and the order a second dict: a line is written for every
    message, and twice for one a proxy forwards)."""
    structlog.contextvars.merge_contextvars(logger, method, event)
    if "exc_info" in event:
        event = structlog.processors.format_exc_info(logger, method, event)
    _drop_secret_keys(logger, method, event)
    # the head _event_first would move to the front, made first
    line = structlog.processors.add_log_level(logger, method, {"timestamp": _CLOCK.now()})
    if "event" in event:
        line["event"] = event.pop("event")
    for key in _HEAD:
        event.pop(key, None)
    line.update(event)
    return _json_line(line)


class _LineWriter:
    """structlog's last step for omgate's own events: each rendered line goes to the stream
    (the one stdlib's handler writes to) and is flushed at once, on an event loop too, so
    that a request's lines are in the log before its answer leaves (a test, or an
    operator, reading the log after the answer finds them). Holding the lines of a turn of
    the loop for one write saved nothing measurable (a write is about 3 µs, a message
    hundreds). As with stdlib's handler, a stream that cannot be written never fails the
    code that logged."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def msg(self, line: str) -> None:
        with self._lock:
            try:
                self._stream.write(line + "\n")
                self._stream.flush()
            except (OSError, ValueError):  # a closed or broken stream
                pass

    debug = info = warning = warn = error = critical = exception = fatal = log = msg


def configure_logging(log_format: str = "auto", level: str = "info",
                      stream: TextIO | None = None) -> None:
    stream = stream or sys.stderr
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        _stamp,
        _drop_secret_keys,
    ]
    rendering: list[Processor] = [structlog.processors.format_exc_info, _event_first,
                                  *_rendering(log_format, stream)]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *rendering],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for library in _QUIET_LIBRARIES:
        logging.getLogger(library).setLevel(logging.WARNING)
    writer = _LineWriter(stream)
    own: list[Processor] = ([_omgate_json_line] if _uses_json(log_format, stream)
                            else [*shared, *rendering])
    structlog.configure(
        processors=own,
        logger_factory=lambda *_names: writer,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[
            level.upper()]),
        cache_logger_on_first_use=True,
    )


def get_logger(name: str = "omgate") -> Any:
    return structlog.get_logger(name)
