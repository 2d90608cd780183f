"""The chain registry in a PostgreSQL inbox."""

from __future__ import annotations

import datetime as dt
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
from service.inbox.dialect import POSTGRES
from service.inbox.postgres_database import PostgresDatabase
from service.inbox.stores import ChainStore

_CHAINS = chain_statements(POSTGRES)


class PostgresChainStore(PostgresDatabase, ChainStore):
    chain_sql = _CHAINS

    async def record_chains(self, sightings: Sequence[ChainSighting],
                            hours: Sequence[HourCount]) -> list[str]:
        missing = []
        async with self._transaction() as connection:
            for sighting in sightings:
                statement = _CHAINS.add if sighting.certificates is None else _CHAINS.upsert
                if not (await connection.execute(statement,
                                                 sighting_values(sighting))).rowcount:
                    missing.append(sighting.chain_sha256)
                    continue
                for seen in sighting.endpoints:
                    await connection.execute(
                        _CHAINS.endpoint, endpoint_values(sighting.chain_sha256, seen))
            for count in hours:
                await connection.execute(_CHAINS.hour, hour_values(count))
        return missing

    async def _read_chains(self, statement: str, endpoints: str,
                           parameters: dict[str, Any]) -> list[ChainRecord]:
        return chain_records(await self._execute(statement, parameters),
                             await self._execute(endpoints, parameters))

    async def decisions_since(self, since: dt.datetime) -> dict[str, int]:
        rows = await self._execute(_CHAINS.hours_since, {"since": since})
        return {row["outcome"]: int(row["connections"]) for row in rows}

    async def decision_hours(self, since: dt.datetime, limit: int) -> list[HourCount]:
        return hour_counts(await self._execute(_CHAINS.hours, {"since": since,
                                                                "limit": limit}))

    async def forget_chains(self, before: dt.datetime) -> None:
        async with self._transaction() as connection:
            for statement in _CHAINS.forget:
                await connection.execute(statement, {"before": before})
