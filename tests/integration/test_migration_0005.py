"""Migration 0005 upgrades an existing warehouse in place: its events stay, ingress_answers and the
received_at index appear (the index built CONCURRENTLY, outside the migration's transaction)."""

from __future__ import annotations

import asyncio

from sqlalchemy import text

from canvas_stream import migrate
from tests.support.warehouse import warehouse_at


async def test_upgrade_from_0004_keeps_events_and_adds_the_answer_ledger(postgres_server_url):
    async with warehouse_at(postgres_server_url, "0004") as (url, engine):
        async with engine.begin() as conn:
            await conn.execute(text(
                "insert into canvas_stream.events (event_id, event_name, format, received_at, payload) "
                "values ('kept', 'course_created', 'canvas', now(), '{}'::jsonb)"))
        await asyncio.to_thread(migrate.upgrade, url)
        async with engine.connect() as conn:
            assert (await conn.execute(text("select event_id from canvas_stream.events"))).scalars().all() == ["kept"]
            indexes = set((await conn.execute(text(
                "select indexname from pg_indexes where schemaname = 'canvas_stream' "
                "and tablename in ('events', 'ingress_answers')"))).scalars())
            assert {"events_received_at_idx", "ingress_answers_minute_idx", "ingress_answers_pkey"} <= indexes
            valid = (await conn.execute(text(
                "select indisvalid from pg_index where indexrelid = 'canvas_stream.events_received_at_idx'::regclass"
            ))).scalar_one()
            assert valid is True
        async with engine.begin() as conn:
            await conn.execute(text(
                "insert into canvas_stream.ingress_answers "
                "values (date_trunc('minute', now()), '/live-events', 'r', 503, 2, 0)"))
        await asyncio.to_thread(migrate.downgrade, url, "0004")
        async with engine.connect() as conn:
            left = (await conn.execute(text("select to_regclass('canvas_stream.ingress_answers')"))).scalar_one()
            assert left is None
            assert (await conn.execute(text("select count(*) from canvas_stream.events"))).scalar_one() == 1
