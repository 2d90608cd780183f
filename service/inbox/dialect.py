"""What differs between the SQL of SQLite and of PostgreSQL, as one value a statement
builder takes: parameter styles, column types, and the few statements written apart."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Dialect:
    named_style: str  # formats a parameter's name into a named parameter (":{}")
    positional: str  # one parameter by position ("?")
    id_type: str  # an id column that numbers itself
    timestamp_type: str
    first_15: str  # the first 15 characters of record_id
    # the statements that add notifications.next_attempt_at (NOT NULL, filled in)
    add_next_attempt_at: tuple[str, ...]
    # what this backend alone adds to schema version 1
    own_tables: tuple[str, ...] = ()
    # formats a parameter's number into a numbered parameter ("?{}"); None: the backend's
    # driver has none
    numbered_style: str | None = None

    def named(self, *names: str) -> str:
        """Named parameters, comma-separated."""
        return ", ".join(self.named_style.format(name) for name in names)


SQLITE = Dialect(
    named_style=":{}", positional="?", id_type="INTEGER", timestamp_type="TEXT",
    first_15="substr(record_id, 1, 15)",
    add_next_attempt_at=(
        "ALTER TABLE notifications ADD COLUMN next_attempt_at TEXT NOT NULL DEFAULT ''",),
    # what check_writable updates to learn whether a write transaction can be opened
    own_tables=(
        "CREATE TABLE heartbeat (id INTEGER PRIMARY KEY CHECK (id = 1), at TEXT)",
        "INSERT INTO heartbeat (id, at) VALUES (1, NULL)",
    ),
    numbered_style="?{}",
)
POSTGRES = Dialect(
    named_style="%({})s", positional="%s", id_type="BIGSERIAL", timestamp_type="TIMESTAMPTZ",
    first_15="left(record_id, 15)",
    add_next_attempt_at=(
        "ALTER TABLE notifications ADD COLUMN next_attempt_at TIMESTAMPTZ",
        "UPDATE notifications SET next_attempt_at = received_at",
        "ALTER TABLE notifications ALTER COLUMN next_attempt_at SET NOT NULL",
    ),
)
