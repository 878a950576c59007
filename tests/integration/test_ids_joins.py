"""One id per Canvas object, through the writer into PostgreSQL: events that name every object in
both id forms (and a student of another shard) give one row per object, and the joins analysts
write (course_sections / enrollments / courses / users / submissions / assignments) return the rows
they should."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, text

from canvas_stream.records import record_from_bytes
from processors.batch import prepare
from processors.normalize import IdPolicy, normalize
from processors.sink import WarehouseSink
from processors.warehouse import tables
from tests.support import scenario
from tests.support.scenario import (
    ASSIGNMENT,
    COURSE,
    FOREIGN_STUDENT,
    HOME,
    ROSTER,
    ROSTER_ROWS,
    SCORES,
    SCORES_ROWS,
    SECTION,
    STUDENT,
    SUBMISSION,
    TEACHER,
)

S = tables.SCHEMA


async def load(engine, policy: IdPolicy) -> None:
    batch = prepare(scenario.records(), policy)
    assert batch.quarantined() == []
    await WarehouseSink(engine).write(batch)


async def ids(engine, table) -> set:
    async with engine.connect() as conn:
        return set((await conn.execute(select(table.c.id))).scalars())


@pytest.mark.parametrize("home", [HOME, None], ids=["home-shard-set", "home-shard-unset"])
async def test_each_object_has_one_row_and_the_joins_return_its_rows(engine, home):
    await load(engine, IdPolicy(home))
    async with engine.connect() as conn:
        assert [tuple(r) for r in await conn.execute(text(ROSTER.format(s=S)))] == ROSTER_ROWS
        assert [tuple(r) for r in await conn.execute(text(SCORES.format(s=S)))] == SCORES_ROWS
    assert await ids(engine, tables.courses) == {COURSE}
    assert await ids(engine, tables.TABLES["course_sections"]) == {SECTION}
    assert await ids(engine, tables.assignments) == {ASSIGNMENT}
    assert await ids(engine, tables.submissions) == {SUBMISSION, scenario.FOREIGN_SUBMISSION}
    assert await ids(engine, tables.enrollments) == {4811, 4812, 4813}
    users = await ids(engine, tables.users)
    if home is not None:
        # The shard-3 event's local "42" is that student: one row, in global form (not the home shard's).
        assert users == {STUDENT, TEACHER, FOREIGN_STUDENT}
    else:
        # Unset, each event's own shard counts as home: the shard-3 event's "42" stays local (documented).
        assert users == {STUDENT, TEACHER, FOREIGN_STUDENT, scenario.FOREIGN_LOCAL}
    async with engine.connect() as conn:
        foreign = (await conn.execute(select(tables.users).where(tables.users.c.id == FOREIGN_STUDENT))).one()
        assert foreign.name == "Foreign Student"
        assert (foreign.short_name == "FS") == (home is not None)
        course = (await conn.execute(select(tables.courses))).one()
        # Both forms' events merged by the writer's rule: name from the newer (global), state from the older.
        assert (course.name, course.workflow_state) == ("Linear Algebra II", "available")
        assert set(course.field_versions) == {"name", "workflow_state"}


async def test_event_rows_carry_the_same_ids(engine):
    await load(engine, IdPolicy(HOME))
    expected = {}
    for record in scenario.records():
        for event in normalize(record_from_bytes(record), IdPolicy(HOME)).events:
            expected[event.event_id] = (event.user_id, event.context_id)
    async with engine.connect() as conn:
        stored = {r.event_id: (r.user_id, r.context_id)
                  for r in await conn.execute(select(tables.events.c.event_id, tables.events.c.user_id,
                                                     tables.events.c.context_id))}
        assert stored == expected
        home_courses = (await conn.execute(select(func.count()).select_from(tables.events)
                                           .where(tables.events.c.context_id == COURSE))).scalar_one()
    assert home_courses == len(expected) - 1  # all but the shard-3 event, whose "565" is shard 3's course
    assert all(user is None or user < 10**13 or user // 10**13 != HOME for user, _ in stored.values())
