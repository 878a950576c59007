"""Migration 0015 upgrades an existing warehouse in place: every jsonb column (on partitioned tables,
their partitions too, and partitions made later) compresses with lz4 where the server has lz4; rows
written before read back the same, and new large values are stored lz4-compressed."""

from __future__ import annotations

import asyncio
import json

from sqlalchemy import text

from canvas_stream import migrate
from processors.warehouse import partitions
from processors.warehouse.schema import SCHEMA as S
from tests.support.warehouse import warehouse_at

PREVIOUS = "0014"  # the revision 0015 follows

LARGE = {"text": "".join(f"word{i} " for i in range(2000))}  # ~14 kB: compressed and stored out of line


async def jsonb_compression(engine) -> dict[tuple[str, str], str]:
    """(table, column) -> attcompression ('' = the server's default) of every jsonb column in the schema."""
    async with engine.connect() as conn:
        rows = (await conn.execute(text(
            "SELECT c.relname, a.attname, CAST(a.attcompression AS text) FROM pg_attribute a "
            "JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = :s AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped "
            "AND a.atttypid = CAST('jsonb' AS regtype)"), {"s": S})).all()
    return {(table, column): method for table, column, method in rows}


async def has_lz4(engine) -> bool:
    async with engine.connect() as conn:
        return bool((await conn.execute(text(
            "SELECT coalesce('lz4' = ANY(enumvals), false) FROM pg_settings "
            "WHERE name = 'default_toast_compression'"))).scalar())


async def insert_event(engine, event_id: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(text(
            f"INSERT INTO {S}.events (event_id, event_name, format, event_time, received_at, payload, happening_id) "
            "VALUES (:id, 'asset_accessed', 'canvas', now(), now(), CAST(:p AS jsonb), :id)"),
            {"id": event_id, "p": json.dumps(LARGE)})


async def stored(engine, event_id: str) -> tuple[dict, str | None]:
    async with engine.connect() as conn:
        payload, method = (await conn.execute(text(
            f"SELECT payload, pg_column_compression(payload) FROM {S}.events WHERE event_id = :id"),
            {"id": event_id})).one()
    return payload, method


async def test_0015_sets_lz4_on_every_jsonb_column(postgres_server_url):
    async with warehouse_at(postgres_server_url, PREVIOUS) as (url, engine):
        await insert_event(engine, "before")
        before = await jsonb_compression(engine)
        assert before[("events", "payload")] == ""  # the server's default (pglz unless configured)
        lz4 = await has_lz4(engine)

        await asyncio.to_thread(migrate.upgrade, url)
        after = await jsonb_compression(engine)
        assert after.keys() == before.keys()
        assert {("events", "payload"), ("events", "arrival"), ("asset_accesses", "field_versions"),
                ("courses", "field_versions")} <= after.keys()
        partition_columns = [k for k in after if k[0].startswith("events_") and k[1] == "payload"]
        assert partition_columns  # the monthly partitions are listed too, and follow their parent
        expected = "l" if lz4 else ""
        assert set(after.values()) == {expected}, {k: v for k, v in after.items() if v != expected}

        # a partition made after the upgrade copies the parent's setting
        month = partitions.Month(2099, 1)
        name = partitions.partition_name("events", month)
        async with engine.begin() as conn:
            for statement in partitions.create_partition_sql("events", name, month, month.add(1)):
                await conn.execute(text(statement))
        assert (await jsonb_compression(engine))[(name, "payload")] == expected

        await insert_event(engine, "after")
        old_payload, _ = await stored(engine, "before")
        new_payload, new_method = await stored(engine, "after")
        assert old_payload == new_payload == LARGE
        assert new_method == ("lz4" if lz4 else "pglz")

        await asyncio.to_thread(migrate.downgrade, url, PREVIOUS)
        assert set((await jsonb_compression(engine)).values()) == {""}
        assert (await stored(engine, "after"))[0] == LARGE
