"""How one message's rows are stored, as the statements to run, without I/O: each backend
runs what the plan yields and sends back the answers."""

from __future__ import annotations

from collections.abc import Generator, Mapping
from dataclasses import dataclass
from typing import Any

from service.inbox.encoding import Rows, conflict_values, conflict_with
from service.inbox.model import DuplicateConflict, StoreResult
from service.inbox.statements import ConflictStatements


@dataclass(frozen=True)
class Statement:
    """One statement a store asks its backend to run: the answer sent back is the row it
    fetched (``fetch``), else the number of rows it changed."""

    sql: str
    parameters: Mapping[str, Any]
    fetch: bool = False


StorePlan = Generator[Statement, Any, StoreResult]


def store_plan(rows: Rows, insert: str, conflicts: ConflictStatements) -> StorePlan:
    """Insert each row; an identical redelivery is a duplicate; one whose content differs
    is recorded as a conflict and the stored notification kept."""
    new = duplicates = 0
    found: list[DuplicateConflict] = []
    for row in rows:
        if (yield Statement(insert, row)):
            new += 1
            continue
        conflict = conflict_with(row, (yield Statement(conflicts.stored, row, fetch=True)))
        if conflict is None:
            duplicates += 1
            continue
        values = conflict_values(conflict, row)
        yield Statement(conflicts.record, values)
        yield Statement(conflicts.count, values)
        found.append(conflict)
    return StoreResult(new, duplicates, tuple(found))
