"""The inbox's schema, version by version, in a backend's dialect: what each version adds
(its tables, columns and indexes) and nothing a backend runs besides."""

from __future__ import annotations

from service.inbox.chains import LISTENER
from service.inbox.dialect import Dialect
from service.inbox.model import PENDING

SCHEMA_VERSION = 6
Migrations = dict[int, list[str]]


def schema_migrations(dialect: Dialect) -> Migrations:
    """Each schema version's statements, from 1 to SCHEMA_VERSION."""
    return {
        1: [*notifications_migration(dialect), *dialect.own_tables],
        2: delivery_migration(dialect),
        3: conflicts_migration(dialect),
        4: chains_migration(dialect),
        5: record_index_migration(),
        6: [*console_migration(dialect), *hours_by_endpoint_migration(dialect)],
    }


def notifications_migration(dialect: Dialect) -> list[str]:
    """Schema version 1: the notifications themselves."""
    id_type, timestamp_type = dialect.id_type, dialect.timestamp_type
    return [f"""CREATE TABLE notifications (
            id               {id_type} PRIMARY KEY,
            org_key          TEXT NOT NULL,
            notification_key TEXT NOT NULL,
            organization_id  TEXT NOT NULL,
            action_id        TEXT NOT NULL,
            notification_id  TEXT NOT NULL,
            sobject_type     TEXT,
            record_id        TEXT,
            fields           TEXT NOT NULL,
            endpoint         TEXT NOT NULL,
            enterprise_url   TEXT,
            partner_url      TEXT,
            session_id       TEXT,
            received_at      {timestamp_type} NOT NULL,
            UNIQUE (org_key, notification_key)
        )"""]


def delivery_migration(dialect: Dialect) -> list[str]:
    """Schema version 2: delivery state (rows stored before it are pending delivery)."""
    timestamp_type = dialect.timestamp_type
    return [
        "ALTER TABLE notifications ADD COLUMN record_key TEXT",
        f"UPDATE notifications SET record_key = {dialect.first_15} WHERE record_id IS NOT NULL",  # noqa: S608
        f"ALTER TABLE notifications ADD COLUMN state TEXT NOT NULL DEFAULT '{PENDING}'",
        "ALTER TABLE notifications ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0",
        *dialect.add_next_attempt_at,
        f"ALTER TABLE notifications ADD COLUMN lease_until {timestamp_type}",
        "ALTER TABLE notifications ADD COLUMN last_error TEXT",
        f"ALTER TABLE notifications ADD COLUMN delivered_at {timestamp_type}",
        "CREATE INDEX notifications_due ON notifications (state, next_attempt_at)",
        "CREATE INDEX notifications_record ON notifications (org_key, record_key, id)",
    ]


def conflicts_migration(dialect: Dialect) -> list[str]:
    """Schema version 3: content digests and the table of conflicting redeliveries. Rows
    stored before it get their digest from ``ConflictStatements.undigested`` and
    ``.set_digest``, in the same transaction."""
    id_type, timestamp_type = dialect.id_type, dialect.timestamp_type
    return [
        "ALTER TABLE notifications ADD COLUMN content_sha256 TEXT",
        "ALTER TABLE notifications ADD COLUMN conflicts INTEGER NOT NULL DEFAULT 0",
        f"""CREATE TABLE duplicate_conflicts (
            id               {id_type} PRIMARY KEY,
            inbox_id         BIGINT NOT NULL REFERENCES notifications (id),
            content_sha256   TEXT NOT NULL,
            endpoint         TEXT NOT NULL,
            action_id        TEXT NOT NULL,
            sobject_type     TEXT,
            record_id        TEXT,
            fields           TEXT NOT NULL,
            received_at      {timestamp_type} NOT NULL
        )""",
        "CREATE INDEX duplicate_conflicts_notification ON duplicate_conflicts (inbox_id, id)",
    ]


def chains_migration(dialect: Dialect) -> list[str]:
    """Schema version 4: the chain registry (``service.inbox.chains``)."""
    timestamp_type = dialect.timestamp_type
    return [
        f"""CREATE TABLE client_chains (
            chain_sha256  TEXT PRIMARY KEY,
            certificates  TEXT NOT NULL,
            source        TEXT NOT NULL,
            first_seen    {timestamp_type} NOT NULL,
            last_seen     {timestamp_type} NOT NULL,
            connections   BIGINT NOT NULL DEFAULT 0,
            unproven      BIGINT NOT NULL DEFAULT 0,
            messages      BIGINT NOT NULL DEFAULT 0,
            last_peer     TEXT,
            last_proxy    TEXT
        )""",
        "CREATE INDEX client_chains_last_seen ON client_chains (last_seen)",
        f"""CREATE TABLE client_chain_endpoints (
            chain_sha256  TEXT NOT NULL REFERENCES client_chains (chain_sha256),
            endpoint      TEXT NOT NULL,
            messages      BIGINT NOT NULL DEFAULT 0,
            outcome       TEXT,
            enforced      INTEGER,
            mode          TEXT,
            findings      TEXT,
            policy_sha256 TEXT,
            decided_at    {timestamp_type},
            PRIMARY KEY (chain_sha256, endpoint)
        )""",
        f"""CREATE TABLE client_auth_hours (
            hour          {timestamp_type} NOT NULL,
            outcome       TEXT NOT NULL,
            connections   BIGINT NOT NULL,
            PRIMARY KEY (hour, outcome)
        )""",
    ]


def record_index_migration() -> list[str]:
    """Schema version 5: the record index is no longer kept by every store; delivery builds
    its own (:data:`DELIVERY_INDEX`) when it starts."""
    return ["DROP INDEX IF EXISTS notifications_record"]


def console_migration(dialect: Dialect) -> list[str]:
    """Schema version 6: the chain each notification arrived with, and the history of its
    delivery (the console's page of one notification)."""
    id_type, timestamp_type = dialect.id_type, dialect.timestamp_type
    return [
        "ALTER TABLE notifications ADD COLUMN chain_sha256 TEXT",
        f"""CREATE TABLE delivery_events (
            id               {id_type} PRIMARY KEY,
            inbox_id         BIGINT NOT NULL REFERENCES notifications (id),
            at               {timestamp_type} NOT NULL,
            kind             TEXT NOT NULL,
            error            TEXT
        )""",
        "CREATE INDEX delivery_events_notification ON delivery_events (inbox_id, id)",
    ]


def hours_by_endpoint_migration(dialect: Dialect) -> list[str]:
    """Schema version 6: decisions counted per endpoint too; the hours counted before are
    the listener's (they were not told apart)."""
    timestamp_type = dialect.timestamp_type
    return [
        f"""CREATE TABLE client_auth_hours_v6 (
            hour          {timestamp_type} NOT NULL,
            endpoint      TEXT NOT NULL,
            outcome       TEXT NOT NULL,
            connections   BIGINT NOT NULL,
            PRIMARY KEY (hour, endpoint, outcome)
        )""",
        "INSERT INTO client_auth_hours_v6 (hour, endpoint, outcome, connections) "  # noqa: S608
        f"SELECT hour, '{LISTENER}', outcome, connections FROM client_auth_hours",
        "DROP TABLE client_auth_hours",
        "ALTER TABLE client_auth_hours_v6 RENAME TO client_auth_hours",
    ]
