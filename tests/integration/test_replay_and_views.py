"""Replay rebuilds derived tables from the events table; analyst views answer from them; docs stay in sync."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from canvas_stream.datadict import render
from canvas_stream.settings import DEFAULT_WAREHOUSE_SCHEMA
from processors.batch import prepare
from processors.normalize import IdPolicy
from processors.replay import replay
from processors.sink import WarehouseSink
from processors.warehouse import tables
from tests.support.corpus import load_examples
from tests.support.warehouse import snapshot

ROOT = Path(__file__).resolve().parents[2]
S = tables.SCHEMA
IDS = IdPolicy()  # what the workers use when CANVAS_HOME_SHARD is unset


async def load_corpus(engine) -> None:
    batch = prepare([example.record().to_bytes() for example in load_examples()], IDS)
    assert batch.quarantined() == []
    await WarehouseSink(engine).write(batch)


async def test_replay_rebuilds_identical_tables_and_is_idempotent(engine):
    await load_corpus(engine)
    before = await snapshot(engine)
    assert sum(len(rows) for rows in before.values()) > 50
    # Lose a derived table and tamper with another; the events are the source of truth.
    async with engine.begin() as conn:
        await conn.execute(text(f"TRUNCATE {S}.submissions"))
        await conn.execute(text(f"UPDATE {S}.courses SET name = 'tampered'"))
    stats = await replay(engine, IDS, page_size=7)
    async with engine.connect() as conn:
        stored = (await conn.execute(text(f"select count(*) from {S}.events"))).scalar_one()
    assert stats.events == stored > 100
    assert stats.quarantined == 0
    assert await snapshot(engine) == before
    await replay(engine, IDS)
    assert await snapshot(engine) == before
    # --keep fills only what is missing and leaves the rest as it is.
    async with engine.begin() as conn:
        await conn.execute(text(f"TRUNCATE {S}.grade_changes"))
    await replay(engine, IDS, rebuild=False)
    assert await snapshot(engine) == before


async def test_views_answer_the_common_questions(engine):
    await load_corpus(engine)
    async with engine.connect() as conn:
        grades = (await conn.execute(text(f"select * from {S}.current_grades"))).mappings().all()
        assert grades and all(g["workflow_state"] != "deleted" for g in grades)
        scored = [g for g in grades if g["score"] is not None]
        assert scored
        dau = (await conn.execute(text(f"select * from {S}.daily_active_users"))).mappings().all()
        assert dau and all(d["active_users"] >= 1 for d in dau)
        await conn.execute(text(f"select * from {S}.active_enrollments"))
        await conn.execute(text(f"select * from {S}.active_enrollment_counts"))
        comment = (await conn.execute(text(f"select obj_description('{S}.current_grades'::regclass)"))).scalar()
        assert "score" in comment
        split = (await conn.execute(text(
            f"select {S}.shard_id(21070000000000565), {S}.local_id(21070000000000565)"))).one()
        assert tuple(split) == (2107, 565)


def test_data_dictionary_is_up_to_date():
    committed = (ROOT / "docs" / "warehouse.md").read_text()
    assert committed == render(), "run: canvas-stream data-dictionary --out docs/warehouse.md"
    for table in tables.metadata.sorted_tables:
        assert f"## `{DEFAULT_WAREHOUSE_SCHEMA}.{table.name}`" in committed
