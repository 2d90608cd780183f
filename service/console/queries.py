"""The console's query values, read once: a value that cannot be used is not silently
dropped, it becomes a :class:`Problem` the page shows (``?since=abc`` says why it was
ignored and what is shown instead)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from service.inbox import inbox_id_of
from service.observatory.views import parse_duration
from service.text import clipped

SHOWN_VALUE = 60  # characters of a value the page repeats
Choice = TypeVar("Choice", bound=str)


@dataclass(frozen=True)
class Problem:
    """A query value the page ignored: ``name=value``, why, and what it shows instead."""

    name: str
    value: str
    reason: str
    instead: str


@dataclass
class QueryReader:
    """Reads values from a query string (or a form) and collects what it had to ignore."""

    values: Mapping[str, Any]  # a query string's, or a form's (its text fields)
    problems: list[Problem] = field(default_factory=list)

    def text(self, name: str) -> str:
        return str(self.values.get(name, "")).strip()

    def ignore(self, name: str, value: str, reason: str, instead: str) -> None:
        self.problems.append(Problem(name, clipped(value, SHOWN_VALUE), reason, instead))

    def choice(self, name: str, allowed: Collection[Choice], instead: str) -> Choice | None:
        """One of ``allowed``, or None (empty: none asked for)."""
        value = self.text(name)
        if not value:
            return None
        for option in allowed:
            if option == value:
                return option
        self.ignore(name, value, f"it is not one of {', '.join(allowed) or '(none)'}", instead)
        return None

    def inbox_id(self, name: str, instead: str) -> int | None:
        """A positive inbox id, or None."""
        value = self.text(name)
        if not value:
            return None
        if (inbox_id := inbox_id_of(value)) is not None:
            return inbox_id
        self.ignore(name, value, "it is not an inbox id (a positive whole number)", instead)
        return None

    def duration(self, name: str, default: str) -> tuple[str, dt.timedelta]:
        """A window like ``7d``; ``default`` when there is none or it cannot be used."""
        value = self.text(name)
        if value:
            try:
                return value, parse_duration(value)
            except ValueError as error:
                self.ignore(name, value, str(error).replace(repr(value), "it"),
                             f"showing {default}")
        return default, parse_duration(default)
