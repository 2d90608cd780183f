"""structlog setup: JSON lines for machines, a readable console for people.

Every library's stdlib logging goes through the same renderer, so hypercorn's
messages and omgate's events share one format. Logs go to standard error;
standard output belongs to command results (``omgate inbox list``). The console
format shows every control and bidirectional formatting character escaped: many
values (paths, certificate names) were written by peers.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import sys
from typing import Any, TextIO

import structlog
from structlog.dev import Column, ConsoleRenderer, KeyValueColumnFormatter
from structlog.typing import EventDict, Processor, WrappedLogger

from service.terminal import escape_controls
from service.tools.report import write_findings

# httpx logs every webhook request's URL (its query may hold a token) at INFO; the
# delivery.* events say what happened instead.
_QUIET_LIBRARIES = ("httpx", "httpcore")
# Keys that could carry a message's session id; dropped from every event as a backstop.
_SECRET_KEYS = frozenset({"session_id", "sessionid", "SessionId", "private_key"})


def _drop_secret_keys(_logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
    for key in _SECRET_KEYS & event.keys():
        event[key] = "<redacted>"
    return event


def _event_first(_logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
    """Put time, level and event name first, so a JSON line reads left to right."""
    head: dict[str, Any] = {key: event.pop(key) for key in ("timestamp", "level", "event")
                            if key in event}
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


def _rendering(log_format: str, stream: TextIO) -> list[Processor]:
    use_json = log_format == "json" or (log_format == "auto" and not stream.isatty())
    if use_json:  # JSON escapes every control character itself, and stays exact
        return [structlog.processors.JSONRenderer(sort_keys=False)]
    return [_escape_tracebacks, _console_renderer()]


def configure_logging(log_format: str = "auto", level: str = "info",
                      stream: TextIO | None = None) -> None:
    stream = stream or sys.stderr
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _drop_secret_keys,
    ]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            _event_first,
            *_rendering(log_format, stream),
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for library in _QUIET_LIBRARIES:
        logging.getLogger(library).setLevel(logging.WARNING)
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[
            level.upper()]),
        cache_logger_on_first_use=True,
    )


def get_logger(name: str = "omgate") -> Any:
    return structlog.get_logger(name)
