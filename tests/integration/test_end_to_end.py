"""HTTP POST -> Kafka -> faust worker process -> PostgreSQL, for both formats, with repeats and reordering."""

from __future__ import annotations

import copy

import pytest
from sqlalchemy import func, select, text

from processors.normalize import IdPolicy
from processors.warehouse import tables
from tests.support.events import example, ingress_and_worker, signed
from tests.support.procs import wait_until


@pytest.fixture
async def pipeline(engine, kafka_bootstrap, unique_topic, migrated_database_url):
    async with ingress_and_worker(kafka_bootstrap, f"{unique_topic}-e2e", migrated_database_url) as (client, worker):
        yield client, engine, worker


async def count(engine, table) -> int:
    async with engine.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(table))).scalar_one()


async def test_signed_events_of_both_formats_reach_the_warehouse(pipeline):
    client, engine, worker = pipeline
    course = example("canvas", "course_created")
    grade_canvas = example("canvas", "grade_change")
    grade_caliper = example("caliper", "grade_change")
    newer_course = copy.deepcopy(course)
    newer_course["metadata"]["event_name"] = "course_updated"
    newer_course["metadata"]["event_time"] = "2030-01-01T00:00:00.000Z"
    newer_course["body"]["name"] = "Renamed later"

    # The newer update arrives first; every event is delivered more than once.
    deliveries = [newer_course, grade_caliper, course, grade_canvas, course, grade_canvas, newer_course,
                  grade_caliper]
    for event in deliveries:
        response = await client.post("/live-events", data=signed(event))
        assert response.status == 200, await response.text()

    await wait_until(lambda: _count_at_least(engine, tables.events, 4), timeout=90,
                     message=f"4 events in the events table; worker log:\n{worker.output()}")
    await wait_until(lambda: _count_at_least(engine, tables.grade_changes, 1), timeout=30, message="grade_changes")
    assert await count(engine, tables.events) == 4  # distinct events, not deliveries
    # The docs' two grade_change examples are one happening (same request, submission and time) in
    # two formats: two events, one grade change.
    assert await count(engine, tables.grade_changes) == 1

    async with engine.connect() as conn:
        formats = dict((await conn.execute(text(
            f"select format, count(*) from {tables.SCHEMA}.events group by format"))).all())
        assert formats == {"canvas": 3, "caliper": 1}
        course_id = stored_id(course["body"]["course_id"])
        row = (await conn.execute(select(tables.courses).where(tables.courses.c.id == course_id))).one()
        assert row.name == "Renamed later"  # the older course_created never overwrote the newer update
        submission_id = stored_id(grade_canvas["body"]["submission_id"])
        sub = (await conn.execute(select(tables.submissions).where(tables.submissions.c.id == submission_id))).one()
        assert sub.score == float(grade_canvas["body"]["score"])
        assert sub.assignment_id == stored_id(grade_canvas["body"]["assignment_id"])
        names = set((await conn.execute(select(tables.events.c.event_name))).scalars())
        assert names == {"course_created", "course_updated", "grade_change"}


def stored_id(raw: str) -> int:
    """The id the worker stores for a corpus id (its events name shard 2107; no home shard is set)."""
    return IdPolicy().for_event(2107)(raw)


async def _count_at_least(engine, table, n: int) -> bool:
    return await count(engine, table) >= n
