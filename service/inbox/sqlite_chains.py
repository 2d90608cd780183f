"""The chain registry in a SQLite inbox."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Sequence
from typing import Any

from service.inbox.chain_statements import chain_statements
from service.inbox.chains import (
    ChainRecord,
    ChainSighting,
    HourCount,
    chain_records,
    endpoint_values,
    hour_counts,
    hour_values,
    sighting_values,
)
from service.inbox.dialect import SQLITE
from service.inbox.sqlite_database import SqliteDatabase, timestamp, with_timestamps
from service.inbox.stores import ChainStore

_CHAINS = chain_statements(SQLITE)


class SqliteChainStore(SqliteDatabase, ChainStore):
    chain_sql = _CHAINS

    async def record_chains(self, sightings: Sequence[ChainSighting],
                            hours: Sequence[HourCount]) -> list[str]:
        def write(connection: sqlite3.Connection) -> list[str]:
            missing = []
            for sighting in sightings:
                statement = _CHAINS.add if sighting.certificates is None else _CHAINS.upsert
                if not connection.execute(statement,
                                          with_timestamps(sighting_values(sighting))).rowcount:
                    missing.append(sighting.chain_sha256)
                    continue
                connection.executemany(_CHAINS.endpoint, [
                    with_timestamps(endpoint_values(sighting.chain_sha256, seen))
                    for seen in sighting.endpoints])
            connection.executemany(_CHAINS.hour,
                                   [with_timestamps(hour_values(count)) for count in hours])
            return missing

        return await self._write(write)

    async def _read_chains(self, statement: str, endpoints: str,
                           parameters: dict[str, Any]) -> list[ChainRecord]:
        bound = with_timestamps(parameters)
        rows, endpoint_rows = await self._queries((statement, bound), (endpoints, bound))
        return chain_records([dict(row) for row in rows], [dict(row) for row in endpoint_rows])

    async def decisions_since(self, since: dt.datetime) -> dict[str, int]:
        rows = await self._query(_CHAINS.hours_since, {"since": timestamp(since)})
        return {row["outcome"]: int(row["connections"]) for row in rows}

    async def decision_hours(self, since: dt.datetime, limit: int) -> list[HourCount]:
        rows = await self._query(_CHAINS.hours, {"since": timestamp(since), "limit": limit})
        return hour_counts([dict(row) for row in rows])

    async def forget_chains(self, before: dt.datetime) -> None:
        def forget(connection: sqlite3.Connection) -> None:
            for statement in _CHAINS.forget:
                connection.execute(statement, {"before": timestamp(before)})

        await self._write(forget)
