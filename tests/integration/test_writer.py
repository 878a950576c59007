"""The warehouse write rule against a real PostgreSQL: per-column latest event wins, idempotently."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, text

from processors.batch import Item, PreparedBatch
from processors.normalize.model import EventRow, Normalized, RowChange, make_version
from processors.sink import WarehouseSink, is_poison
from processors.warehouse import tables
from processors.warehouse.writer import collapse, insert_events, upsert_changes

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def change(fields: dict, minutes: int, event_id: str, table: str = "submissions", key: int = 1) -> RowChange:
    return RowChange(table, {"id": key}, fields, make_version(T0 + timedelta(minutes=minutes), event_id))


async def rows(engine, table) -> list[dict]:
    async with engine.connect() as conn:
        result = await conn.execute(select(table).order_by(*table.primary_key.columns))
        return [dict(r._mapping) for r in result]


async def apply(engine, changes) -> None:
    async with engine.begin() as conn:
        await upsert_changes(conn, changes)


HISTORY = [
    change({"score": 5.0, "grade": "5", "workflow_state": "graded", "assignment_id": 7}, 1, "a"),
    change({"workflow_state": "submitted", "submitted_at": T0}, 0, "b"),
    change({"score": 9.0, "grade": "9"}, 3, "c"),
    # A later event without a score (Caliper-style): must not null the score.
    change({"workflow_state": "pending_review", "grade": None}, 4, "d"),
    # Same time as "c", different id: ties are broken by event id ("e" > "c").
    change({"score": 8.0}, 3, "e"),
]


async def test_latest_event_wins_per_column(engine):
    await apply(engine, HISTORY)
    [row] = await rows(engine, tables.submissions)
    assert row["score"] == 8.0  # "e" ties with "c" at minute 3 and wins on id
    assert row["grade"] is None  # "d" carried grade=null explicitly, and is the latest to carry grade
    assert row["workflow_state"] == "pending_review"
    assert row["assignment_id"] == 7  # only "a" carried it
    assert row["submitted_at"] == T0
    assert row["last_event_at"] == T0 + timedelta(minutes=4)


async def test_any_order_and_repetition_gives_the_same_row(engine):
    await apply(engine, HISTORY)
    expected = await rows(engine, tables.submissions)
    for order in list(itertools.permutations(HISTORY))[:: 7]:
        async with engine.begin() as conn:
            await conn.execute(text(f"TRUNCATE {tables.SCHEMA}.submissions"))
        # One change per transaction, each delivered twice, in this order.
        for c in order:
            await apply(engine, [c])
            await apply(engine, [c])
        assert await rows(engine, tables.submissions) == expected


async def test_batch_collapse_matches_sequential_writes(engine):
    merged = collapse(list(reversed(HISTORY)) + HISTORY)
    assert len(merged) == 1
    await apply(engine, list(reversed(HISTORY)) * 2)
    [row] = await rows(engine, tables.submissions)
    assert row["score"] == 8.0 and row["workflow_state"] == "pending_review"


async def test_older_event_never_overwrites_newer(engine):
    await apply(engine, [change({"workflow_state": "deleted"}, 10, "z")])
    await apply(engine, [change({"workflow_state": "active", "grade": "A"}, 2, "y")])
    [row] = await rows(engine, tables.submissions)
    assert row["workflow_state"] == "deleted"
    assert row["grade"] == "A"  # no newer event carried grade


def event(event_id: str, received_minutes: int) -> EventRow:
    return EventRow(event_id, "grade_change", "canvas", T0, T0 + timedelta(minutes=received_minutes), 1, "Course",
                    2, {"x": event_id})


async def test_events_are_stored_once_with_earliest_receipt(engine):
    async with engine.begin() as conn:
        await insert_events(conn, [event("e1", 5), event("e1", 3), event("e2", 1)])
    async with engine.begin() as conn:
        await insert_events(conn, [event("e1", 1), event("e2", 9)])
    stored = {r["event_id"]: r["received_at"] for r in await rows(engine, tables.events)}
    assert stored == {"e1": T0 + timedelta(minutes=1), "e2": T0 + timedelta(minutes=1)}


async def test_poison_message_is_quarantined_and_the_rest_lands(engine):
    good = Normalized(events=[event("ok", 0)], changes=[change({"score": 1.0}, 0, "ok")])
    bad = Normalized(events=[event("bad", 0)], changes=[change({"score": 2.0}, 0, "bad", key=2**63 - 1)])
    bad.changes.append(change({"attempt": 2**70}, 0, "bad", key=3))  # out of bigint range
    batch = PreparedBatch([Item(b'{"good":1}', normalized=good), Item(b'{"bad":1}', normalized=bad)])
    sink = WarehouseSink(engine)
    await sink.write(batch)
    assert [r["event_id"] for r in await rows(engine, tables.events)] == ["ok"]
    [q] = await rows(engine, tables.quarantine)
    assert q["raw"] == '{"bad":1}' and "database refused" in q["reason"]
    assert sink.ready


def test_poison_classification():
    assert is_poison(ValueError("x"))
    assert not is_poison(ConnectionRefusedError())
    assert not is_poison(TimeoutError())


async def test_a_json_column_no_event_carried_is_sql_null(engine):
    from processors.normalize.model import RowChange, make_version

    jsonb_tables = [t for t in tables.warehouse_tables()
                    if any(c.type.__class__.__name__ == "JSONB" and c.name != "field_versions" for c in t.c)]
    assert jsonb_tables
    table = jsonb_tables[0]
    column = next(c.name for c in table.c if c.type.__class__.__name__ == "JSONB" and c.name != "field_versions")
    key = {c.name: (1 if c.type.__class__.__name__ == "BigInteger" else "k") for c in table.primary_key.columns}
    async with engine.begin() as conn:
        await upsert_changes(conn, [RowChange(table.name, key, {}, make_version(T0, "e"))])
        found = await conn.execute(text(f"select count(*) from {tables.SCHEMA}.{table.name} where {column} is null"))
        assert found.scalar_one() == 1


async def test_field_versions_are_the_same_whether_one_version_or_several(engine):
    """A row set by one event sends its versions as column names and that version (built by
    ``jsonb_object``), a row merged from several events as JSON text: both store the versions per
    column; an event id with JSON's special characters and a comma stays as it was."""
    odd = 'x"y\\z,w|ü'
    one = change({"score": 5.0, "grade": "5"}, 1, odd, key=1)
    merged = [change({"score": 6.0, "grade": "6"}, 1, "a", key=2), change({"grade": "7"}, 2, "b", key=2)]
    await apply(engine, [one, *merged])
    stored = {row["id"]: row["field_versions"] for row in await rows(engine, tables.submissions)}
    assert stored[1] == {"score": one.version, "grade": one.version}
    assert stored[2] == {"score": merged[0].version, "grade": merged[1].version}
    async with engine.connect() as conn:  # jsonb equality, not only the decoded values
        same = (await conn.execute(text(
            f"SELECT field_versions = CAST(:expected AS jsonb) FROM {tables.SCHEMA}.submissions WHERE id = 1"),
            {"expected": json.dumps({"score": one.version, "grade": one.version})})).scalar_one()
    assert same
