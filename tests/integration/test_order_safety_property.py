"""Property: any permutation of a course history, each event delivered one to four times and split
into any batches, ends in exactly the same warehouse tables (real PostgreSQL, real normalizers)."""

from __future__ import annotations

import asyncio
import copy
import json
import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import create_async_engine

from canvas_stream.records import Record, Verification
from processors.batch import prepare
from processors.normalize import IdPolicy
from processors.sink import WarehouseSink
from processors.warehouse import tables
from tests.support.events import example
from tests.support.warehouse import empty_tables, snapshot

TIMES = [f"2024-03-0{day}T10:00:00.000Z" for day in range(1, 5)]  # few values: ties happen
COURSE, ASSIGNMENT, SUBMISSION, STUDENT = "21070000000000565", "21070000000000355", "21070000000011086", \
    "21070000000000048"


def canvas_event(name: str, when: str, body: dict) -> dict:
    event = example("canvas", name)
    event["metadata"]["event_time"] = when
    event["metadata"]["context_id"] = COURSE
    event["body"].update(body)
    return event


def caliper_grade(when: str, grade: str) -> dict:
    event = example("caliper", "grade_change")
    item = event["data"][0]
    item["eventTime"] = when
    item["object"]["extensions"]["com.instructure.canvas"]["grade"] = grade
    item["id"] = "urn:uuid:" + str(uuid.uuid5(uuid.NAMESPACE_URL, json.dumps(item, sort_keys=True)))
    return event


@st.composite
def history(draw) -> list[dict]:
    """A course's events: renames, assignment edits, submissions and grade changes in both formats."""
    events = []
    for _ in range(draw(st.integers(3, 10))):
        when = draw(st.sampled_from(TIMES))
        kind = draw(st.sampled_from(["course", "assignment", "submission", "grade", "caliper_grade"]))
        value = draw(st.sampled_from(["1", "2", "3"]))
        if kind == "course":
            events.append(canvas_event("course_updated", when, {"course_id": COURSE, "name": f"Course {value}",
                                                                "workflow_state": draw(st.sampled_from(
                                                                    ["available", "completed", "deleted"]))}))
        elif kind == "assignment":
            events.append(canvas_event("assignment_updated", when, {"assignment_id": ASSIGNMENT,
                                                                    "title": f"Essay {value}",
                                                                    "points_possible": int(value) * 10}))
        elif kind == "submission":
            events.append(canvas_event("submission_updated", when, {"submission_id": SUBMISSION,
                                                                    "assignment_id": ASSIGNMENT,
                                                                    "user_id": STUDENT,
                                                                    "workflow_state": "submitted"}))
        elif kind == "grade":
            events.append(canvas_event("grade_change", when, {"submission_id": SUBMISSION,
                                                              "assignment_id": ASSIGNMENT,
                                                              "score": int(value), "grade": value}))
        else:
            events.append(caliper_grade(when, value))
    return events


def records(events: list[dict]) -> list[bytes]:
    out = []
    for event in events:
        fmt = "caliper" if "data" in event else "canvas"
        out.append(Record(source="live_event", format=fmt, received_at="2024-03-10T00:00:00+00:00",
                          payload=copy.deepcopy(event), verification=Verification(signed=True)).to_bytes())
    return out


async def load(url: str, batches: list[list[bytes]]) -> dict:
    engine = create_async_engine(url, pool_size=1)
    try:
        async with engine.begin() as conn:
            await empty_tables(conn)
        sink = WarehouseSink(engine)
        for batch in batches:
            prepared = prepare(batch, IdPolicy())
            assert prepared.quarantined() == []
            await sink.write(prepared)
        return await snapshot(engine, [*tables.warehouse_tables(), tables.events])
    finally:
        await engine.dispose()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(events=history(), data=st.data())
def test_any_order_and_any_repetition_ends_in_the_same_tables(migrated_database_url, events, data):
    reference = asyncio.run(load(migrated_database_url, [records(events)]))
    deliveries = [m for m, times in zip(records(events), data.draw(
        st.lists(st.integers(1, 4), min_size=len(events), max_size=len(events))), strict=True)
        for _ in range(times)]
    shuffled = data.draw(st.permutations(deliveries))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(shuffled)), max_size=4)))
    batches = [shuffled[a:b] for a, b in zip([0, *cuts], [*cuts, len(shuffled)], strict=True) if b > a]
    assert asyncio.run(load(migrated_database_url, batches)) == reference
