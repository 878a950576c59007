"""Upgrading in place: a warehouse of the previous release (schema ``canvas``, one object split over
rows in both id forms, field_versions set) goes, through ``canvas-stream migrate``, to the new schema
and ids, rows of one object merged by the writer's rule; the same queries then answer with the new
ids, and ``canvas-stream replay`` rebuilds exactly the same tables."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import create_async_engine

from canvas_stream import migrate as migrations
from canvas_stream.records import record_from_bytes
from processors.normalize import IdPolicy, normalize
from processors.warehouse import tables
from processors.warehouse.schema import LEGACY_SCHEMA, TABLE_SPECS
from tests.support import databases, scenario
from tests.support.legacy import build_previous_release, cli, migrate, write_as_previous_release
from tests.support.scenario import COURSE, ROSTER, ROSTER_ROWS, SCORES, SCORES_ROWS
from tests.support.warehouse import snapshot

S = tables.SCHEMA


async def rows(engine, sql: str) -> list[tuple]:
    async with engine.connect() as conn:
        return [tuple(r) for r in await conn.execute(text(sql))]


@pytest.mark.parametrize(("home", "schema_exists"), [("2107", False), (None, True)],
                         ids=["home-set-schema-renamed", "home-unset-objects-moved"])
async def test_a_previous_release_upgrades_in_place_and_replays_the_same(postgres_server_url, home, schema_exists):
    name = f"cs_upgr_{uuid.uuid4().hex[:10]}"
    url = await databases.create_database(postgres_server_url, name)
    engine = create_async_engine(url)
    try:
        await asyncio.to_thread(build_previous_release, url)
        await write_as_previous_release(engine, scenario.records())
        # The previous release, as analysts met it: one object, two rows, and joins that lose rows.
        assert await rows(engine, f"SELECT id FROM {LEGACY_SCHEMA}.courses ORDER BY id") == [
            (COURSE,), (scenario.G + COURSE,)]
        assert len(await rows(engine, f"SELECT * FROM {LEGACY_SCHEMA}.submissions")) == 3
        assert await rows(engine, ROSTER.format(s=LEGACY_SCHEMA)) != ROSTER_ROWS
        assert await rows(engine, SCORES.format(s=LEGACY_SCHEMA)) != SCORES_ROWS
        if schema_exists:  # a DBA created the new schema beforehand: objects are moved one by one
            async with engine.begin() as conn:
                await conn.execute(text(f"CREATE SCHEMA {S}"))

        output = await asyncio.to_thread(migrate, url, CANVAS_HOME_SHARD=home)
        assert "moved the previous release's warehouse into its own schema" in output
        assert ("objects moved" if schema_exists else "schema renamed") in output

        heads = ScriptDirectory.from_config(migrations.alembic_config(url)).get_heads()
        assert await rows(engine, f"SELECT version_num FROM {S}.alembic_version") == [(h,) for h in heads]
        assert await rows(engine, f"SELECT to_regnamespace('{LEGACY_SCHEMA}') IS NULL") == [(True,)]
        # The same queries answer with the new ids; each object is one row.
        assert await rows(engine, ROSTER.format(s=S)) == ROSTER_ROWS
        assert await rows(engine, SCORES.format(s=S)) == SCORES_ROWS
        assert await rows(engine, f"SELECT count(*) FROM {S}.current_grades") == [(2,)]  # the views moved too
        [(course_id, name_, state, versions)] = await rows(
            engine, f"SELECT id, name, workflow_state, field_versions FROM {S}.courses")
        assert (course_id, name_, state) == (COURSE, "Linear Algebra II", "available")
        assert set(versions) == {"name", "workflow_state"}  # merged from the two rows
        users = {r[0] for r in await rows(engine, f"SELECT id FROM {S}.users")}
        merged_foreign = {scenario.STUDENT, scenario.TEACHER, scenario.FOREIGN_STUDENT}
        assert users == (merged_foreign if home else merged_foreign | {scenario.FOREIGN_LOCAL})

        # Event rows hold the ids the worker would now give them.
        policy = IdPolicy(int(home) if home else None)
        expected = {e.event_id: (e.user_id, e.context_id) for r in scenario.records()
                    for e in normalize(record_from_bytes(r), policy).events}
        assert {r[0]: (r[1], r[2]) for r in await rows(engine, f"SELECT event_id, user_id, context_id FROM {S}.events")
                } == expected

        # `canvas-stream replay` (a rebuild from the events) gives exactly the migrated entity tables.
        # Fact tables are the exception by design: migration 0010 keeps each old fact row under its own
        # happening (happening_id = event_id); the one replay after upgrading merges the happenings
        # delivered in both formats (docs/operations.md). A second replay changes nothing.
        migrated = await snapshot(engine)
        output = await asyncio.to_thread(cli, url, "replay", "--page-size", "3", CANVAS_HOME_SHARD=home)
        assert f"replayed {len(expected)} events" in output and "; 0 quarantined" in output
        replayed = await snapshot(engine)
        facts = {name for name, spec in TABLE_SPECS.items() if spec.keys and spec.keys[0].name == "happening_id"}
        assert facts and {k: v for k, v in replayed.items() if k not in facts} == {
            k: v for k, v in migrated.items() if k not in facts}
        await asyncio.to_thread(cli, url, "replay", "--page-size", "3", CANVAS_HOME_SHARD=home)
        assert await snapshot(engine) == replayed
        async with engine.connect() as conn:
            count = (await conn.execute(select(func.count()).select_from(tables.submissions))).scalar_one()
        assert count == 2
    finally:
        await engine.dispose()
        await databases.drop_database(postgres_server_url, name)


async def test_a_fresh_install_beside_canvas_data_2_leaves_its_schema_alone(postgres_server_url):
    """CD2's `canvas` schema (same table names, an Alembic table of someone else's even) is never touched."""
    name = f"cs_cd2_{uuid.uuid4().hex[:10]}"
    url = await databases.create_database(postgres_server_url, name)
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            for statement in (f"CREATE SCHEMA {LEGACY_SCHEMA}",
                              f"CREATE TABLE {LEGACY_SCHEMA}.courses (id bigint PRIMARY KEY, name varchar(255))",
                              f"INSERT INTO {LEGACY_SCHEMA}.courses VALUES (565, 'Linear Algebra')",
                              f"CREATE TABLE {LEGACY_SCHEMA}.alembic_version (version_num varchar(32) PRIMARY KEY)",
                              f"INSERT INTO {LEGACY_SCHEMA}.alembic_version VALUES ('0001')"):
                await conn.execute(text(statement))
        output = await asyncio.to_thread(migrate, url)
        assert "moved the previous release's warehouse" not in output
        assert await rows(engine, f"SELECT id, name FROM {LEGACY_SCHEMA}.courses") == [(565, "Linear Algebra")]
        assert await rows(engine, f"SELECT version_num FROM {LEGACY_SCHEMA}.alembic_version") == [("0001",)]
        assert await rows(engine, f"SELECT count(*) FROM {S}.courses") == [(0,)]
        heads = ScriptDirectory.from_config(migrations.alembic_config(url)).get_heads()
        assert await rows(engine, f"SELECT version_num FROM {S}.alembic_version") == [(h,) for h in heads]
    finally:
        await engine.dispose()
        await databases.drop_database(postgres_server_url, name)
