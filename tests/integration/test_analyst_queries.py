"""The queries the documentation gives analysts: they run, they use the indexes, and the worked
examples joining Canvas Data 2 return the rows they should, against CD2 tables made the way
``dap initdb`` makes them (schema ``canvas``, CD2's table and column names, key ``id``)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio
from sqlalchemy import text

from benchmarks.queries import CD2_SCHEMA, documented_queries, seq_scans
from canvas_stream import datadict
from processors.batch import prepare
from processors.normalize import IdPolicy
from processors.sink import WarehouseSink
from processors.warehouse import tables
from processors.warehouse.schema import LEGACY_SCHEMA as CD2
from tests.support import scenario
from tests.support.events import example
from tests.support.scenario import FOREIGN_STUDENT, HOME, STUDENT, TEACHER

S = tables.SCHEMA
NEW_STUDENT = 50  # enrolled today: in the live tables, not yet in CD2

# CD2's tables (as ``dap initdb`` makes them: benchmarks/queries.py) with a few rows of CD2's own.
CD2_TABLES = CD2_SCHEMA + f""";
INSERT INTO {CD2}.courses (id, name, workflow_state, updated_at) VALUES (565, 'Linear Algebra (CD2)', 'available',
    '2024-03-02');
INSERT INTO {CD2}.users (id, name, updated_at) VALUES ({STUDENT}, 'Student Two', '2024-03-02'),
    ({TEACHER}, 'T. Eacher', '2024-03-02'), ({FOREIGN_STUDENT}, 'Foreign Student', '2024-03-02');
INSERT INTO {CD2}.enrollments (id, user_id, course_id, course_section_id, type, workflow_state, updated_at)
    VALUES (4811, {STUDENT}, 565, 77, 'StudentEnrollment', 'active', '2024-03-02');
INSERT INTO {CD2}.assignments (id, title, context_id, context_type, points_possible, updated_at)
    VALUES (355, 'Essay', 565, 'Course', 10, '2024-03-02');
INSERT INTO {CD2}.submissions (id, assignment_id, user_id, course_id, score, workflow_state, updated_at) VALUES
    (11086, 355, {STUDENT}, 565, 6, 'graded', '2024-03-02'),
    (11087, 355, {FOREIGN_STUDENT}, 565, 8, 'graded', '2099-01-01');
"""


def page_view(user: int, when: datetime) -> dict:
    """A page view of its own request (one request id per view, as Canvas sends them: views sharing a
    request id, object and second would be one happening, counted once)."""
    event = scenario.canvas_event("asset_accessed", when.isoformat().replace("+00:00", "Z"),
                                  example("canvas", "asset_accessed")["body"], user=user)
    event["metadata"]["request_id"] = f"view-{user}-{when.timestamp()}"
    return event


@pytest_asyncio.fixture
async def warehouse(engine):
    """The scenario's course in the live tables (home shard 2107), page views, and CD2's copy."""
    now = datetime.now(UTC)
    extra = [scenario.canvas_event("user_created", scenario.T[1], {"user_id": NEW_STUDENT, "name": "New Student"}),
             page_view(STUDENT, now), page_view(STUDENT, now - timedelta(seconds=1)), page_view(NEW_STUDENT, now),
             page_view(STUDENT, now - timedelta(days=2))]
    batch = prepare(scenario.records(scenario.events() + extra), IdPolicy(HOME))
    assert batch.quarantined() == []
    await WarehouseSink(engine).write(batch)
    async with engine.begin() as conn:
        await conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {CD2} CASCADE")
        for statement in CD2_TABLES.split(";"):
            if statement.strip():
                await conn.exec_driver_sql(statement)
    try:
        yield engine
    finally:
        async with engine.begin() as conn:
            await conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {CD2} CASCADE")


async def run(engine, sql: str) -> list[tuple]:
    async with engine.connect() as conn:
        await conn.exec_driver_sql("SET TIME ZONE 'UTC'")
        return [tuple(r) for r in await conn.execute(text(sql.replace("canvas_stream.", f"{S}.")))]


async def test_the_cd2_worked_examples_return_the_rows_they_should(warehouse):
    scores, enrollments, views = datadict.CD2_QUERIES.values()
    # Live newer than CD2 for student 48 (9.5 at 03-05 > CD2's 03-02); CD2 newer for the other (2099).
    assert await run(warehouse, scores) == [("Essay", "Foreign Student", 8.0, "graded"),
                                            ("Essay", "Student Two", 9.5, "submitted")]
    got = await run(warehouse, enrollments)
    assert [row[:4] for row in got] == [(4812, "StudentEnrollment", "Linear Algebra (CD2)", "Foreign Student"),
                                        (4813, "TeacherEnrollment", "Linear Algebra (CD2)", "T. Eacher")]
    assert [row[:2] for row in await run(warehouse, views)] == [("Student Two", 2), ("New Student", 1)]


QUERIES = [(q.source, q.sql) for q in documented_queries()]


def test_the_documentation_has_queries_for_the_tables_and_views_analysts_join():
    joined = " ".join(q for _, q in QUERIES)
    assert len(QUERIES) >= 15
    for name in ("submissions", "assignments", "enrollments", "users", "grade_changes", "events",
                 "asset_accesses", "quarantine", "current_grades", "active_enrollments", "daily_active_users"):
        assert f"canvas_stream.{name}" in joined, name


@pytest.mark.parametrize(("source", "query"), QUERIES, ids=[f"{s}:{q.splitlines()[0][:60]}" for s, q in QUERIES])
async def test_documented_query_runs_and_an_index_serves_every_table_it_filters_or_joins(warehouse, source, query):
    await run(warehouse, query)
    async with warehouse.begin() as conn:
        await conn.exec_driver_sql("SET LOCAL enable_seqscan = off")  # a seq scan now means: no index could serve
        plan = (await conn.execute(text("EXPLAIN (FORMAT JSON, VERBOSE) " + query.replace(
            "canvas_stream.", f"{S}.")))).scalar_one()
    plan = json.loads(plan) if isinstance(plan, str) else plan
    assert seq_scans(plan[0]["Plan"], is_watched=lambda _name: True) == [], (source, query)
