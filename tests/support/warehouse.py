"""The warehouse as the tests see it: each table's rows, in primary-key order; emptying it; a scratch
warehouse at an earlier migration."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterable

from sqlalchemy import Table, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from canvas_stream import migrate
from processors.warehouse import tables
from tests.support import databases


async def snapshot(engine: AsyncEngine, which: Iterable[Table] | None = None) -> dict[str, list[tuple]]:
    """{table name: rows as tuples} of ``which`` (default: the tables the writer upserts into), so
    that two states compare with ``==`` and a difference names its table."""
    out: dict[str, list[tuple]] = {}
    async with engine.connect() as conn:
        for table in tables.warehouse_tables() if which is None else which:
            result = await conn.execute(select(table).order_by(*table.primary_key.columns))
            out[table.name] = [tuple(r) for r in result]
    return out


# Which warehouse tables hold a row: one query (built once) for every table of the metadata.
_FILLED_TABLES = text(" UNION ALL ".join(
    f"SELECT '{name}' WHERE EXISTS (SELECT FROM {name})"
    for name in (f"{tables.SCHEMA}.{t.name}" for t in tables.metadata.sorted_tables)))


async def empty_tables(conn: AsyncConnection) -> None:
    """Empty every warehouse table as ``TRUNCATE`` of them all would, but truncate only the tables that
    hold a row (one query finds them): a ``TRUNCATE`` of the ~60 tables cost ~0.25 s, and the tests empty
    the warehouse hundreds of times while only a few tables hold rows."""
    filled = [row[0] for row in await conn.execute(_FILLED_TABLES)]
    if filled:
        await conn.execute(text(f"TRUNCATE {', '.join(filled)}"))


@contextlib.asynccontextmanager
async def warehouse_at(server_url: str, revision: str) -> AsyncIterator[tuple[str, AsyncEngine]]:
    """A database of its own on the server of ``server_url``, migrated up to ``revision`` (a migration
    test fills it as that release would, then upgrades); yields its URL and an engine on it, and drops
    it afterwards."""
    name = f"cs_m{revision}_{uuid.uuid4().hex[:10]}"
    url = await databases.create_database(server_url, name)
    engine = create_async_engine(url)
    try:
        await asyncio.to_thread(migrate.upgrade, url, revision)
        yield url, engine
    finally:
        await engine.dispose()
        await databases.drop_database(server_url, name)
