"""The warehouse as the tests compare it: each table's rows, in primary-key order."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncEngine

from processors.warehouse import tables


async def snapshot(engine: AsyncEngine, which: Iterable[Table] | None = None) -> dict[str, list[tuple]]:
    """{table name: rows as tuples} of ``which`` (default: the tables the writer upserts into), so
    that two states compare with ``==`` and a difference names its table."""
    out: dict[str, list[tuple]] = {}
    async with engine.connect() as conn:
        for table in tables.warehouse_tables() if which is None else which:
            result = await conn.execute(select(table).order_by(*table.primary_key.columns))
            out[table.name] = [tuple(r) for r in result]
    return out
