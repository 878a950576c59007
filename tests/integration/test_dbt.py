"""The dbt analytics layer on a warehouse filled through the pipeline.

Signed Canvas events go through the real ingress -> Kafka -> worker process -> PostgreSQL; then
``dbt build`` (dbt from its own virtual environment, .venv-dbt) runs every model and test against
that warehouse, and the marts must show the figures the events imply. The events include a
submission to an assignment that was never seen and course grades for a course that was never
seen, so the `severity: warn` relationships must warn (not fail), and every other test pass.
"""

from __future__ import annotations

import asyncio
import copy
import json
import time
from datetime import date
from pathlib import Path

from sqlalchemy import func, select, text

from canvas_stream.dbt_runner import run_dbt
from processors.warehouse import tables
from tests.support.dbt_env import ROOT, ensure_dbt_venv
from tests.support.events import example, ingress_and_worker, signed
from tests.support.procs import wait_until

# Local-form ids: the events' root account is on shard 2107, so that is how the workers store them.
COURSE_A = 565
COURSE_B = 777  # no course event is sent for it
STUDENT_1, STUDENT_2, STUDENT_3, TEACHER = 1001, 1002, 1003, 1009
ON_PAPER, DUE_SOON, DUE_PAST = 2001, 2002, 2003
NEVER_SEEN_ASSIGNMENT = 2999
TARGET_SCHEMA = "analytics_test"


def canvas_event(name: str, when: str, body: dict, *, user: int | None = None, course: int | None = None,
                 template: str | None = None) -> dict:
    """A Canvas-format event from the corpus's example of ``template`` (default: ``name``)."""
    event = example("canvas", template or name)
    meta = event["metadata"]
    meta.update(event_name=name, event_time=when)
    for key in ("user_id", "context_type", "context_id"):
        meta.pop(key, None)
    if user is not None:
        meta["user_id"] = str(user)
    if course is not None:
        meta.update(context_type="Course", context_id=str(course))
    event["body"] = {k: str(v) if k.endswith("_id") and v is not None else v for k, v in body.items()}  # as Canvas
    return event


def page_view(user: int, course: int, when: str) -> dict:
    body = {"asset_id": course, "asset_type": "course", "asset_subtype": "modules", "asset_name": "Course",
            "category": "wiki", "role": "StudentEnrollment", "level": None}
    return canvas_event("asset_accessed", when, body, user=user, course=course)


def warehouse_events() -> tuple[list[dict], int]:
    """The deliveries to send (one page view twice) and the number of distinct events among them."""
    views = [
        page_view(STUDENT_1, COURSE_A, "2024-03-04T10:00:00Z"),
        page_view(STUDENT_1, COURSE_A, "2024-03-04T11:00:00Z"),
        page_view(STUDENT_2, COURSE_A, "2024-03-04T12:00:00Z"),
        page_view(TEACHER, COURSE_A, "2024-03-04T13:00:00Z"),
        page_view(STUDENT_1, COURSE_A, "2024-03-05T09:00:00Z"),
        page_view(STUDENT_3, COURSE_B, "2024-03-04T10:00:00Z"),
        page_view(STUDENT_3, COURSE_B, "2024-03-04T10:05:00Z"),
    ]
    course = canvas_event("course_created", "2024-02-01T08:00:00Z",
                          {"course_id": COURSE_A, "name": "Linear Algebra", "account_id": 438,
                           "workflow_state": "available"}, user=TEACHER)
    enrollments = [
        canvas_event("enrollment_created", "2024-02-02T08:00:00Z",
                     {"enrollment_id": 3000 + i, "course_id": COURSE_A, "user_id": user, "type": kind,
                      "workflow_state": "active"}, user=TEACHER, course=COURSE_A)
        for i, (user, kind) in enumerate(
            [(STUDENT_1, "StudentEnrollment"), (STUDENT_2, "StudentEnrollment"), (TEACHER, "TeacherEnrollment")])
    ]
    assignments = [
        canvas_event("assignment_created", "2024-02-03T08:00:00Z",
                     {"assignment_id": assignment, "context_id": COURSE_A, "context_type": "Course", "title": title,
                      "due_at": due, "points_possible": points, "workflow_state": "published"},
                     user=TEACHER, course=COURSE_A)
        for assignment, title, due, points in [
            (DUE_SOON, "Essay", "2024-03-10T23:59:59Z", 10), (DUE_PAST, "Quiz", "2024-03-01T23:59:59Z", 20)]
    ]

    def submission(submission_id: int, assignment: int, user: int, submitted_at: str | None, score: float | None,
                   state: str, when: str) -> dict:
        body = {"submission_id": submission_id, "assignment_id": assignment, "user_id": user,
                "submitted_at": submitted_at, "score": score, "workflow_state": state, "late": False,
                "missing": False}
        return canvas_event("submission_updated", when, body, user=user, course=COURSE_A,
                            template="submission_created")

    submissions = [
        submission(4001, DUE_SOON, STUDENT_1, "2024-03-09T10:00:00Z", 9, "graded", "2024-03-09T10:00:00Z"),
        submission(4002, DUE_SOON, STUDENT_2, "2024-03-11T10:00:00Z", 6, "graded", "2024-03-11T10:00:00Z"),
        submission(4003, DUE_PAST, STUDENT_1, None, None, "unsubmitted", "2024-03-09T11:00:00Z"),
        submission(4004, NEVER_SEEN_ASSIGNMENT, STUDENT_2, "2024-03-08T10:00:00Z", None, "submitted",
                   "2024-03-08T10:00:00Z"),
    ]
    grades = [
        canvas_event("course_grade_change", "2024-03-12T08:00:00Z",
                     {"course_id": course_id, "user_id": user, "current_score": score, "final_score": score,
                      "workflow_state": "active"}, user=TEACHER, course=course_id)
        for course_id, user, score in [(COURSE_A, STUDENT_1, 92.5), (COURSE_A, STUDENT_2, 78.0),
                                       (COURSE_B, STUDENT_3, 55.0)]
    ]
    distinct = [*views, course, *enrollments, *assignments, *submissions, *grades]
    return [*distinct, copy.deepcopy(views[0])], len(distinct)


async def fill_warehouse(engine, kafka_bootstrap: str, topic: str, database_url: str) -> None:
    deliveries, distinct = warehouse_events()
    async with ingress_and_worker(kafka_bootstrap, topic, database_url) as (client, worker):
        for event in deliveries:
            response = await client.post("/live-events", data=signed(event))
            assert response.status == 200, await response.text()

        async def all_stored() -> bool:
            async with engine.connect() as conn:
                stored = (await conn.execute(select(func.count()).select_from(tables.events))).scalar_one()
            return stored >= distinct

        await wait_until(all_stored, timeout=60, message=f"{distinct} events stored; worker:\n{worker.output()}")
    async with engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(tables.events))).scalar_one() == distinct
        assert (await conn.execute(select(func.count()).select_from(tables.quarantine))).scalar_one() == 0


async def rows(engine, sql: str) -> list[dict]:
    async with engine.connect() as conn:
        return [dict(r) for r in (await conn.execute(text(sql))).mappings()]


async def test_dbt_build_on_a_warehouse_filled_through_the_pipeline(engine, kafka_bootstrap, unique_topic,
                                                                     migrated_database_url, tmp_path: Path):
    dbt = await asyncio.to_thread(ensure_dbt_venv)  # before the clock: built once, by .ci/run in CI
    started = time.monotonic()
    await fill_warehouse(engine, kafka_bootstrap, f"{unique_topic}dbt", migrated_database_url)

    try:
        result = await asyncio.to_thread(
            run_dbt, ["build", "--target-path", str(tmp_path / "target"), "--log-path", str(tmp_path / "logs")],
            migrated_database_url, project_dir=ROOT / "dbt", dbt_executable=str(dbt), target_schema=TARGET_SCHEMA,
            capture=True, timeout=300)
        assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-4000:]

        statuses = {r["unique_id"]: r["status"]
                    for r in json.loads((tmp_path / "target" / "run_results.json").read_text())["results"]}
        warned = {uid.split(".")[2] for uid, status in statuses.items() if status == "warn"}
        assert warned == {
            "relationships_stg_submissions_assignment_id__assignment_id__ref_stg_assignments_",
            "relationships_stg_course_scores_course_id__course_id__ref_stg_courses_",
        }
        assert {s for s in statuses.values() if s != "warn"} <= {"pass", "success"}, statuses
        assert sum(1 for uid in statuses if uid.startswith("test.canvas_stream.source_unique_canvas_")) >= 40
        assert {uid.split(".")[-1] for uid in statuses if uid.startswith("model.")} >= {
            "daily_course_activity", "assignment_timeliness", "course_grade_distribution", "course_engagement"}

        activity = {(r["course_id"], r["activity_date"]): r for r in await rows(
            engine, f"select * from {TARGET_SCHEMA}.daily_course_activity")}
        march_4, march_5 = date(2024, 3, 4), date(2024, 3, 5)
        # 4 distinct page views of course A on March 4 (one delivered twice), by 3 users; nothing else that day
        assert activity[COURSE_A, march_4] == {"course_id": COURSE_A, "activity_date": march_4, "events": 4,
                                                    "page_views": 4, "active_users": 3, "page_viewers": 3}
        assert activity[COURSE_A, march_5]["page_views"] == 1
        assert activity[COURSE_B, march_4]["page_views"] == 2
        assert activity[COURSE_B, march_4]["page_viewers"] == 1
        assert sum(r["page_views"] for r in activity.values()) == 7

        timeliness = {r["assignment_id"]: r for r in await rows(
            engine, f"select * from {TARGET_SCHEMA}.assignment_timeliness")}
        essay = timeliness[DUE_SOON]
        assert (essay["title"], essay["submissions"], essay["on_time"], essay["late"], essay["missing"]) == (
            "Essay", 2, 1, 1, 0)
        assert float(essay["on_time_rate"]) == 0.5
        assert essay["enrolled_students"] == 2
        assert (timeliness[DUE_PAST]["missing"], timeliness[DUE_PAST]["on_time"]) == (1, 0)
        unseen = timeliness[NEVER_SEEN_ASSIGNMENT]
        assert (unseen["assignment_known"], unseen["unknown"], unseen["title"]) == (False, 1, None)

        bands = {(r["course_id"], r["grade_band"]): (r["students"], r["graded_submissions"]) for r in await rows(
            engine, f"select * from {TARGET_SCHEMA}.course_grade_distribution")}
        # course A: course scores 92.5 and 78; submissions 9/10 and 6/10. Course B: 55.
        assert bands == {(COURSE_A, "90-100"): (1, 1), (COURSE_A, "70-80"): (1, 0), (COURSE_A, "60-70"): (0, 1),
                         (COURSE_B, "50-60"): (1, 0)}

        engagement = {(r["course_id"], r["user_id"]): r for r in await rows(
            engine, f"select * from {TARGET_SCHEMA}.course_engagement")}
        assert set(engagement) == {(COURSE_A, STUDENT_1), (COURSE_A, STUDENT_2), (COURSE_B, STUDENT_3)}  # no teacher
        first = engagement[COURSE_A, STUDENT_1]
        assert (first["enrollment_state"], first["page_views"], first["active_days"]) == ("active", 3, 3)
        assert (first["submissions_on_time"], first["submissions_late"], first["submissions_missing"]) == (1, 0, 1)
        assert first["current_score"] == 92.5
        assert engagement[COURSE_A, STUDENT_2]["submissions_late"] == 1
        assert engagement[COURSE_B, STUDENT_3]["enrollment_state"] is None

        print(f"pipeline fill and dbt build: {time.monotonic() - started:.0f} s")
    finally:
        async with engine.begin() as conn:
            await conn.execute(text(f"DROP SCHEMA IF EXISTS {TARGET_SCHEMA} CASCADE"))
