"""Migration 0013 upgrades an existing warehouse in place: ``events_name_time_idx`` becomes
``events_name_time_user_idx`` (the daily-active-users queries become index-only scans), the rows stay,
an index left invalid by an interrupted build is rebuilt, and a downgrade restores the old index."""

from __future__ import annotations

import asyncio
import json

from sqlalchemy import text

from benchmarks.queries import documented_queries, in_schema
from canvas_stream import migrate
from processors.warehouse.schema import SCHEMA as S
from tests.support.warehouse import warehouse_at

PREVIOUS = "0012"  # the revision 0013 follows


async def events_indexes(engine) -> dict[str, tuple[str, bool]]:
    """name -> (definition, valid) of the indexes on events."""
    async with engine.connect() as conn:
        rows = (await conn.execute(text(
            "SELECT c.relname, pg_get_indexdef(i.indexrelid), i.indisvalid FROM pg_index i "
            "JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = CAST(:t AS regclass)"),
            {"t": f"{S}.events"})).all()
    return {name: (definition, valid) for name, definition, valid in rows}


async def test_0013_replaces_the_event_name_index_in_place(postgres_server_url):
    async with warehouse_at(postgres_server_url, PREVIOUS) as (url, engine):
        await upgrade_from_previous(engine, url)


async def upgrade_from_previous(engine, url: str) -> None:
    """Rows and an interrupted build of the new index at the previous revision; upgrade; plan; downgrade."""
    async with engine.begin() as conn:
        await conn.execute(text(
            f"INSERT INTO {S}.events (event_id, event_name, format, event_time, received_at, user_id, payload, "
            "happening_id) SELECT 'e' || g, CASE WHEN g % 3 = 0 THEN 'logged_in' ELSE 'asset_accessed' END, "
            "'canvas', now() - g * interval '1 hour', now(), g % 40, '{}'::jsonb, 'e' || g "
            "FROM generate_series(1, 500) g"))
        # a build of the new index interrupted earlier leaves it invalid: the migration must rebuild it
        await conn.execute(text(f"CREATE INDEX events_name_time_user_idx ON {S}.events (event_name)"))
        await conn.execute(text("UPDATE pg_index SET indisvalid = false WHERE indexrelid = "
                                f"CAST('{S}.events_name_time_user_idx' AS regclass)"))
    assert "events_name_time_idx" in await events_indexes(engine)

    await asyncio.to_thread(migrate.upgrade, url)
    found = await events_indexes(engine)
    assert "events_name_time_idx" not in found
    definition, valid = found["events_name_time_user_idx"]
    assert valid and definition.endswith("USING btree (event_name, event_time, user_id)")
    dau = next(q.sql for q in documented_queries() if q.title == "Daily active users from logins and page views")
    async with engine.begin() as conn:
        assert (await conn.execute(text(f"SELECT count(*) FROM {S}.events"))).scalar_one() == 500
        await conn.execute(text("SET LOCAL enable_seqscan = off"))
        plan = (await conn.execute(text("EXPLAIN (FORMAT JSON) " + in_schema(dau)))).scalar_one()
        # events is partitioned by month (0014): the plan names the partitions' copies of the index
        names = set((await conn.execute(text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = CAST(:ix AS regclass)"), {"ix": f"{S}.events_name_time_user_idx"})).scalars())
    plan = json.loads(plan) if isinstance(plan, str) else plan
    assert any(f'"Index Name": "{name}"' in json.dumps(plan) for name in names | {"events_name_time_user_idx"})

    await asyncio.to_thread(migrate.downgrade, url, PREVIOUS)
    found = await events_indexes(engine)
    assert "events_name_time_user_idx" not in found
    assert found["events_name_time_idx"][0].endswith("USING btree (event_name, event_time)")
