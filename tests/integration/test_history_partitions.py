"""Partitioned history against a real PostgreSQL: a 0010 warehouse upgraded in place (and answering the
same), idempotency across partitions and across formats, what the database refuses, months created
ahead, retention dropping whole months, and the scheduled run happening once."""

from __future__ import annotations

import asyncio
import copy
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import MetaData, Table, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from canvas_stream import migrate
from canvas_stream.settings import Settings
from processors.batch import prepare
from processors.maintenance import Maintenance
from processors.normalize import IdPolicy
from processors.normalize.model import EventRow
from processors.replay import replay
from processors.sink import WarehouseSink
from processors.warehouse import partitions, retention, tables, writer
from processors.warehouse.partitions import Month
from processors.warehouse.schema import SCHEMA, TABLE_SPECS
from tests.support import databases, reference_writer
from tests.support.happenings import paired_happenings, record
from tests.support.legacy import cli

S = SCHEMA
IDS = IdPolicy()
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
FUTURE = datetime(2031, 5, 2, tzinfo=UTC)
# (event id, event time) rows of a warehouse at 0010, before partitioning.
OLD_EVENTS = [
    ("e-2023-06", datetime(2023, 6, 30, 23, 59, 59, tzinfo=UTC)),
    ("e-2024-01", datetime(2024, 1, 15, tzinfo=UTC)),
    ("e-2024-02", datetime(2024, 2, 10, tzinfo=UTC)),
    ("e-2024-03-end", datetime(2024, 3, 31, 23, 59, 59, 999999, tzinfo=UTC)),
    ("e-2024-04-start", datetime(2024, 4, 1, tzinfo=UTC)),
    ("e-2024-08", datetime(2024, 8, 2, 10, 11, 12, 345000, tzinfo=UTC)),
    ("e-undated", None),
    ("e-future", FUTURE),
]


def expected_partition(table: str, moment: datetime | None, first: Month) -> str:
    if moment is None or Month.of(moment) < first:
        return partitions.before_name(table)
    return partitions.partition_name(table, Month.of(moment))


async def write_as_0010(engine: AsyncEngine, records: list[bytes]) -> None:
    """What the 0010 worker wrote: facts keyed by happening_id alone, their event_time a versioned data
    column holding the latest delivery's time (to the millisecond), events keyed by event_id."""
    normalized = prepare(records, IDS).normalized()
    async with engine.begin() as conn:
        metadata = MetaData()
        await conn.run_sync(lambda sync: metadata.reflect(sync, schema=S))
        at_0010: dict[str, Table] = {t.name: t for t in metadata.tables.values()}
        events = at_0010["events"]
        columns = [c.name for c in events.c if c.name in EventRow.__slots__]
        rows = [{c: getattr(e, c) for c in columns} for e in normalized.events]
        await conn.execute(insert(events).on_conflict_do_nothing(), rows)
        times = {e.event_id: e.event_time for e in normalized.events}
        by_table: dict[str, list[dict]] = {}
        for change in writer.collapse(normalized.changes):
            table = at_0010[change.table]
            values = dict.fromkeys(table.c.keys())
            values.update({k: v for k, v in change.key.items() if k in table.c})
            values.update(change.fields)
            versions = dict(change.versions)
            if TABLE_SPECS[change.table].partitioned:  # 0010: event_time is the delivery's, versioned
                delivery = change.fields["event_id"]
                values["event_time"], versions["event_time"] = times[delivery], versions["event_id"]
            values["field_versions"] = versions
            values["last_event_at"] = writer._version_time(max(versions.values()))
            by_table.setdefault(change.table, []).append(values)
        for name, values in sorted(by_table.items()):
            await conn.execute(reference_writer._upsert_statement(at_0010[name]), values)


async def _warehouse_at_0010(server_url: str, records: list[bytes]) -> tuple[str, str]:
    name = f"cs_hist_{uuid.uuid4().hex[:10]}"
    url = await databases.create_database(server_url, name)
    await asyncio.to_thread(migrate.upgrade, url, "0010")
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            for event_id, moment in OLD_EVENTS:
                await conn.execute(text(
                    f"INSERT INTO {S}.events (event_id, happening_id, event_name, format, event_time, received_at, "
                    "user_id, payload) VALUES (:id, :id, 'asset_accessed', 'canvas', :t, now(), 7, CAST(:p AS jsonb))"),
                    {"id": event_id, "t": moment, "p": json.dumps({"id": event_id})})
                await conn.execute(text(
                    f"INSERT INTO {S}.asset_accesses (happening_id, event_id, event_time, user_id, field_versions) "
                    "VALUES (:id, :id, :t, 7, CAST(:v AS jsonb))"),
                    {"id": event_id, "t": moment, "v": json.dumps({"event_time": "x", "user_id": "x"})})
            await conn.execute(text(
                f"INSERT INTO {S}.grade_changes (happening_id, event_id, event_time, score, field_versions) "
                "VALUES ('g1', 'g1', NULL, 5, '{}'), ('g2', 'g2', '2024-02-03T00:00:00Z', 6, '{}')"))
            # What dbt leaves behind: views on the history tables in a schema of their own, one on another.
            await conn.execute(text("CREATE SCHEMA analytics"))
            await conn.execute(text(f"CREATE VIEW analytics.stg_events AS SELECT event_id, happening_id, "
                                    f"coalesce(event_time, received_at) AS occurred_at FROM {S}.events"))
            await conn.execute(text("CREATE VIEW analytics.happenings AS "
                                    "SELECT count(DISTINCT happening_id) AS n FROM analytics.stg_events"))
            await conn.execute(text("COMMENT ON VIEW analytics.stg_events IS 'staging: events'"))
        if records:
            await write_as_0010(engine, records)
    finally:
        await engine.dispose()
    return name, url


@pytest.fixture
async def old_warehouse(postgres_server_url) -> AsyncIterator[str]:
    name, url = await _warehouse_at_0010(postgres_server_url, [])
    try:
        yield url
    finally:
        await databases.drop_database(postgres_server_url, name)


HISTORY_COUNTS = " UNION ALL ".join(f"SELECT '{t}', count(*) FROM {S}.{t}"
                                    for t in ("events", "asset_accesses", "grade_changes", "logins"))
# What analysts asked before the upgrade: the same answers after it.
QUERIES = {
    "counts": HISTORY_COUNTS,
    "happenings per fact table": " UNION ALL ".join(
        f"SELECT '{t}', count(DISTINCT happening_id) FROM {S}.{t}" for t in ("asset_accesses", "logins",
                                                                             "grade_changes")),
    "daily active users": f"SELECT day, active_users FROM {S}.daily_active_users ORDER BY day",
    "dbt views": "SELECT n FROM analytics.happenings",
    # Undated rows: NULL before, the epoch after (docs/retention.md); "> the epoch" skips both.
    "dated page views per user and day": f"SELECT user_id, date_trunc('day', event_time), count(*) "
                                         f"FROM {S}.asset_accesses WHERE event_time > '1970-01-01T00:00:00Z' "
                                         "GROUP BY 1, 2 ORDER BY 1, 2",
    "facts joined to their delivery": f"SELECT e.format, count(*) FROM {S}.asset_accesses f "
                                      f"JOIN {S}.events e ON e.event_id = f.event_id GROUP BY 1 ORDER BY 1",
}


async def answers(engine: AsyncEngine) -> dict[str, list[tuple]]:
    async with engine.connect() as conn:
        return {name: [tuple(r) for r in await conn.execute(text(sql))] for name, sql in QUERIES.items()}


async def fact_rows(engine: AsyncEngine) -> dict[str, list[tuple]]:
    async with engine.connect() as conn:
        return {t.name: [tuple(r) for r in await conn.execute(select(t).order_by(*t.primary_key.columns))]
                for t in tables.history_tables() if t.name != "events"}


def both_formats(start: datetime, types: list[str], per_type: int = 2, seed: int = 0) -> list[bytes]:
    """Happenings delivered in both formats, the Canvas delivery to the millisecond, the Caliper one not."""
    out = []
    for canvas, caliper in paired_happenings(per_type, types=types, seed=seed, start=start):
        canvas["metadata"]["event_time"] = canvas["metadata"]["event_time"][:19] + ".987Z"
        out += [record(canvas).to_bytes(), record(caliper).to_bytes()]
    return out


async def test_a_0010_warehouse_upgrades_in_place_and_answers_the_same(postgres_server_url):
    now = datetime.now(UTC).replace(microsecond=0)
    records = (both_formats(now - timedelta(days=3), ["asset_accessed", "logged_in", "grade_change"])
               + both_formats(datetime(2024, 8, 20, 9, tzinfo=UTC), ["asset_accessed"], seed=1))
    name, url = await _warehouse_at_0010(postgres_server_url, records)
    engine = create_async_engine(url)
    try:
        before = await answers(engine)
        assert dict(before["happenings per fact table"]) == {"asset_accesses": len(OLD_EVENTS) + 4, "logins": 2,
                                                             "grade_changes": 2 + 2}
        await asyncio.to_thread(migrate.upgrade, url)
        assert await answers(engine) == before

        first = Month(2023, 6)  # the oldest month holding rows
        async with engine.connect() as conn:
            for table in ("events", "asset_accesses"):
                rows = (await conn.execute(text(
                    f"SELECT event_id, event_time, tableoid::regclass::text FROM {S}.{table}"))).all()
                placed = {r[0]: (r[1], r[2].split(".")[-1]) for r in rows}
                for event_id, moment in OLD_EVENTS:
                    stored, partition = placed[event_id]
                    expected = moment or EPOCH  # undated rows are filed at the epoch; facts at their second
                    assert stored == (expected if table == "events" else expected.replace(microsecond=0))
                    assert partition == expected_partition(table, moment, first), (table, event_id)
            for table in ("events", "asset_accesses", "logins"):
                key = (await conn.execute(text(
                    "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = :c "
                    "AND connamespace = CAST(:s AS regnamespace)"), {"c": f"{table}_pkey", "s": S})).scalar()
                first_key = "event_id" if table == "events" else "happening_id"
                assert key == f"PRIMARY KEY ({first_key}, event_time)"
                kind = (await conn.execute(text(
                    f"SELECT relkind::text FROM pg_class WHERE oid = '{S}.{table}'::regclass"))).scalar()
                assert kind == "p"
            months = {p.name for p in (await partitions.list_partitions(conn))["events"]}
            assert {"events_before", "events_p202306", "events_p202408", "events_p203105",
                    partitions.partition_name("events", Month.of(now).add(3))} <= months
            assert "events_default" not in months
            comment = (await conn.execute(text("SELECT obj_description('analytics.stg_events'::regclass)"))).scalar()
            assert comment == "staging: events"
            versions = (await conn.execute(text(
                f"SELECT field_versions FROM {S}.asset_accesses WHERE happening_id = 'e-2024-01'"))).scalar()
            assert set(versions) == {"user_id"}  # event_time is a key now, not a versioned column

        # The same deliveries again, with today's writer: nothing changes, each happening is still one row.
        migrated = await fact_rows(engine)
        sink = WarehouseSink(engine)
        batch = prepare(records, IDS)
        assert batch.quarantined() == []
        await sink.write(batch)
        assert await fact_rows(engine) == migrated
        assert await answers(engine) == before
        # A rebuild from events gives the same facts (the events without a payload to replay aside).
        stats = await replay(engine, IDS)
        assert stats.quarantined == len(OLD_EVENTS)  # {"id": ...} payloads are not events; they stay in events
        replayable = {t: [r for r in rows if not r[0].startswith(("e-", "g1", "g2"))] for t, rows in migrated.items()}
        assert await fact_rows(engine) == replayable and replayable["logins"]

        # and back: plain tables keyed by the id alone, undated rows NULL again, views still there
        await asyncio.to_thread(migrate.downgrade, url, "0010")
        async with engine.connect() as conn:
            undated = (await conn.execute(text(f"SELECT event_time FROM {S}.events WHERE event_id = 'e-undated'"))
                       ).scalar()
            assert undated is None
            assert (await conn.execute(text("SELECT n FROM analytics.happenings"))).scalar() == \
                before["dbt views"][0][0]
        await asyncio.to_thread(migrate.upgrade, url)
    finally:
        await engine.dispose()
        await databases.drop_database(postgres_server_url, name)


def _redelivered(payload: dict, received: datetime) -> bytes:
    return record(payload, received_at=received.isoformat()).to_bytes()


async def test_redeliveries_months_later_in_either_format_are_one_fact_row(engine):
    """A happening delivered in both formats (sub-second times differing), each delivery repeated 40 and 75
    days later: two events rows (one per delivery, earliest receipt), one fact row, both in the month."""
    when = datetime.now(UTC).replace(microsecond=0)
    [(canvas, caliper)] = paired_happenings(1, types=["asset_accessed"], seed=9, start=when)
    canvas["metadata"]["event_time"] = canvas["metadata"]["event_time"][:19] + ".987Z"
    sink = WarehouseSink(engine)
    first = when + timedelta(minutes=1)
    for received in (first + timedelta(days=40), first, first + timedelta(days=75)):
        for payload in (caliper, canvas):
            batch = prepare([_redelivered(payload, received)], IDS)
            assert batch.quarantined() == []
            await sink.write(batch)
    async with engine.connect() as conn:
        events = (await conn.execute(text(
            f"SELECT format, received_at, event_time, tableoid::regclass::text FROM {S}.events ORDER BY format"))).all()
        facts = (await conn.execute(text(
            f"SELECT event_time, tableoid::regclass::text FROM {S}.asset_accesses"))).all()
    assert [e[0] for e in events] == ["caliper", "canvas"] and {e[1] for e in events} == {first}
    assert events[1][2] == when.replace(microsecond=987000)  # events keep the delivery's precision
    assert len(facts) == 1 and facts[0][0] == when  # the fact: the happening's second
    assert facts[0][1].endswith(partitions.partition_name("asset_accesses", Month.of(when)))


async def test_an_event_beyond_the_last_month_is_quarantined_not_lost(engine):
    now = datetime.now(UTC).replace(microsecond=0)
    [(canvas, _)] = paired_happenings(1, types=["asset_accessed"], seed=4, start=now)
    far = copy.deepcopy(canvas)
    far["metadata"]["event_time"] = "2999-01-01T00:00:00.000Z"
    await WarehouseSink(engine).write(prepare([_redelivered(far, now), _redelivered(canvas, now)], IDS))
    async with engine.connect() as conn:
        assert (await conn.execute(text(f"SELECT count(*) FROM {S}.events"))).scalar() == 1
        [reason] = (await conn.execute(text(f"SELECT reason FROM {S}.quarantine"))).scalars().all()
    assert "no partition" in reason


async def test_ensure_partitions_creates_months_ahead_once(engine):
    later = datetime.now(UTC) + timedelta(days=31 * 5)
    created = await partitions.ensure_partitions(engine, ahead=3, now=later)
    assert partitions.partition_name("events", Month.of(later).add(3)) in created
    assert partitions.partition_name("asset_accesses", Month.of(later).add(3)) in created
    assert await partitions.ensure_partitions(engine, ahead=3, now=later) == []
    racing = await asyncio.gather(*(partitions.ensure_partitions(engine, ahead=4, now=later) for _ in range(3)))
    assert sum(len(r) for r in racing) == len(partitions.HISTORY_TABLES)  # each month made exactly once


async def test_retention_drops_whole_months_and_prunes_old_deleted_rows(old_warehouse):
    await asyncio.to_thread(migrate.upgrade, old_warehouse)
    engine = create_async_engine(old_warehouse)
    now = datetime(2024, 8, 15, tzinfo=UTC)
    try:
        async with engine.begin() as conn:
            for course, state, last in [(1, "deleted", datetime(2024, 1, 2, tzinfo=UTC)),
                                        (2, "deleted", datetime(2024, 8, 1, tzinfo=UTC)),
                                        (3, "available", datetime(2023, 1, 1, tzinfo=UTC))]:
                await conn.execute(text(f"INSERT INTO {S}.courses (id, workflow_state, last_event_at) "
                                        "VALUES (:id, :s, :t)"), {"id": course, "s": state, "t": last})
            await conn.execute(text(f"INSERT INTO {S}.quarantine (id, reason, raw, received_at) VALUES "
                                    "('old', 'r', 'x', '2024-01-01'), ('new', 'r', 'y', '2024-08-10')"))
        policy = retention.Policy({"events": 3, "asset_accesses": 3, "courses": 1, "quarantine": 1})
        counts = await answers(engine)
        dry = await retention.apply(engine, policy, dry_run=True, now=now)
        dropped = {a.target for a in dry.actions if a.what == "drop partition"}
        gone = [Month(2023, 6).add(i) for i in range(11)]  # 2023-06 .. 2024-04: every month before 2024-05
        assert dropped == {partitions.partition_name(t, m) for t in ("events", "asset_accesses") for m in gone}
        assert {(a.table, a.rows) for a in dry.actions if a.what == "delete"} == {("courses", 1), ("quarantine", 1)}
        assert await answers(engine) == counts  # a dry run changes nothing
        assert any("empty before-partition" in line for line in dry.lines())

        done = await retention.apply(engine, policy, dry_run=False, now=now)
        assert {a.target for a in done.actions if a.what == "drop partition"} == dropped
        async with engine.connect() as conn:
            left = set((await conn.execute(text(f"SELECT event_id FROM {S}.events"))).scalars())
            assert left == {"e-2024-08", "e-future"}  # undated rows go with the emptied _before partition
            assert set((await conn.execute(text(f"SELECT happening_id FROM {S}.asset_accesses"))).scalars()) == left
            assert (await conn.execute(text(f"SELECT count(*) FROM {S}.grade_changes"))).scalar() == 2  # no policy
            assert set((await conn.execute(text(f"SELECT id FROM {S}.courses"))).scalars()) == {2, 3}
            assert set((await conn.execute(text(f"SELECT id FROM {S}.quarantine"))).scalars()) == {"new"}
            parts = (await partitions.list_partitions(conn))["events"]
            before = next(p for p in parts if p.is_before)
            assert before.upper == Month(2024, 5) == min(p.lower for p in parts if not p.is_before)
            runs = (await conn.execute(text(f"SELECT trigger, actions FROM {S}.retention_runs"))).all()
        assert len(runs) == 1 and runs[0][0] == "cli" and len(runs[0][1]) == len(done.actions)
        # A late event of a dropped month still has a partition (the new _before); a rerun does nothing.
        [(canvas, _)] = paired_happenings(1, types=["asset_accessed"], seed=2, start=datetime(2024, 2, 3, tzinfo=UTC))
        batch = prepare([_redelivered(canvas, now)], IDS)
        await WarehouseSink(engine).write(batch)
        assert batch.quarantined() == []
        again = await retention.apply(engine, retention.Policy({"courses": 1, "quarantine": 1}), dry_run=False, now=now)
        assert again.actions == []
    finally:
        await engine.dispose()


async def test_the_scheduled_run_happens_once_whatever_the_number_of_workers(engine):
    policy = retention.Policy({"quarantine": 1})
    reports = await asyncio.gather(*(retention.run_scheduled(engine, policy, timedelta(hours=24)) for _ in range(4)))
    ran = [r for r in reports if r.skipped_run is None]
    assert len(ran) == 1, [r.skipped_run for r in reports]
    async with engine.connect() as conn:
        runs = (await conn.execute(text(f"SELECT trigger FROM {S}.retention_runs"))).scalars().all()
    assert len(runs) == 1 and runs[0].startswith("scheduled")
    later = await retention.run_scheduled(engine, policy, timedelta(hours=24))
    assert later.skipped_run and "last scheduled run" in later.skipped_run


async def test_the_commands_list_months_and_say_what_retention_would_drop(migrated_database_url):
    listed = await asyncio.to_thread(cli, migrated_database_url, "partitions", "list")
    assert "events_before" in listed and partitions.partition_name("logins", Month.of(datetime.now(UTC))) in listed
    ahead = await asyncio.to_thread(cli, migrated_database_url, "partitions", "ensure", "--ahead", "3")
    assert ahead.strip().endswith("created 0 partition(s)")
    dry = await asyncio.to_thread(cli, migrated_database_url, "retention", "apply", "--dry-run",
                                  RETENTION_MONTHS='{"quarantine": 1}')
    assert "nothing is past retention" in dry


async def test_workers_maintenance_keeps_months_ahead_and_runs_the_schedule_once(engine, migrated_database_url):
    """Two workers' ticks: months ahead exist, and the scheduled retention ran once (off without the setting)."""
    base = {"database_url": migrated_database_url, "retention_months": {"quarantine": 1}}
    off = Maintenance(Settings(_env_file=None, **base))
    await off.tick()
    async with engine.connect() as conn:
        assert (await conn.execute(text(f"SELECT count(*) FROM {S}.retention_runs"))).scalar() == 0
    on = [Maintenance(Settings(_env_file=None, **base, retention_interval_hours=24, partitions_ahead_months=5))
          for _ in range(2)]
    await asyncio.gather(*(m.tick() for m in on))
    await on[0].tick()
    async with engine.connect() as conn:
        runs = (await conn.execute(text(f"SELECT trigger FROM {S}.retention_runs"))).scalars().all()
        months = {p.name for p in (await partitions.list_partitions(conn))["events"]}
    assert len(runs) == 1 and runs[0].startswith("scheduled on ")
    assert partitions.partition_name("events", Month.of(datetime.now(UTC)).add(5)) in months
