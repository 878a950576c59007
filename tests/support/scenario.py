"""A course whose events name every object in both id forms, built from the corpus's templates.

Home shard 2107 (the corpus's). A course, its section, a teacher, a student, a student from shard 3
(a trust's other instance, global form everywhere but in one event of shard 3, which names her in
local form), their enrollments, an assignment and two submissions. Every object is written once in
local and once in global form, by Canvas-format events and one Caliper event, so the warehouse of
the previous release (ids stored as written) splits them, and the new one must not.
"""

from __future__ import annotations

import copy
from typing import Any

from canvas_stream.records import Record, Verification
from tests.support.events import example

HOME = 2107
FACTOR = 10**13
G = HOME * FACTOR  # add a local id to get the global form of a home-shard object
COURSE, SECTION, TEACHER, STUDENT, ASSIGNMENT = 565, 77, 987, 48, 355
FOREIGN_SHARD, FOREIGN_LOCAL = 3, 42
FOREIGN_STUDENT = FOREIGN_SHARD * FACTOR + FOREIGN_LOCAL  # 30000000000042
SUBMISSION, FOREIGN_SUBMISSION = 11086, 11087
T = {n: f"2024-03-0{n}T10:00:00.000Z" for n in range(1, 6)}


def canvas_event(name: str, when: str, body: dict[str, Any], *, shard: int = HOME, user: int | str | None = None,
                 template: str | None = None) -> dict:
    """A Canvas-format event from the corpus example of ``template`` (default ``name``)."""
    event = example("canvas", template or name)
    meta = event["metadata"]
    meta.update(event_name=name, event_time=when, root_account_id=str(shard * FACTOR + 1))
    for key in ("user_id", "context_type", "context_id", "context_account_id", "user_account_id"):
        meta.pop(key, None)
    if user is not None:
        meta["user_id"] = str(user)
    meta.update(context_type="Course", context_id=str(COURSE))
    event["body"] = {k: str(v) if k.endswith("_id") and isinstance(v, int) else v for k, v in body.items()}
    return event


def caliper_grade(when: str, score: float) -> dict:
    """The corpus's Caliper grade_change (submission 11086 of student 48, URNs in global form)."""
    event = example("caliper", "grade_change")
    item = event["data"][0]
    item["eventTime"] = when
    item["generated"]["scoreGiven"] = score
    item["id"] = "urn:uuid:5c1e0a2e-0000-4000-8000-000000000001"
    return event


def events() -> list[dict]:
    return [
        canvas_event("course_created", T[1], {"course_id": COURSE, "name": "Linear Algebra",
                                               "workflow_state": "available"}),
        canvas_event("course_updated", T[2], {"course_id": G + COURSE, "name": "Linear Algebra II"}),
        canvas_event("course_section_created", T[1], {"course_section_id": SECTION, "course_id": G + COURSE,
                                                       "name": "Section A"}),
        canvas_event("user_created", T[1], {"user_id": G + STUDENT, "name": "Student", "workflow_state": "registered"}),
        canvas_event("user_updated", T[3], {"user_id": STUDENT, "name": "Student Two"}),
        canvas_event("user_created", T[1], {"user_id": TEACHER, "name": "Teacher", "workflow_state": "registered"}),
        canvas_event("user_created", T[1], {"user_id": FOREIGN_STUDENT, "name": "Foreign Student",
                                             "workflow_state": "registered"}),
        # An event of shard 3 names its own user in local form.
        canvas_event("user_updated", T[4], {"user_id": FOREIGN_LOCAL, "short_name": "FS"}, shard=FOREIGN_SHARD),
        canvas_event("enrollment_created", T[2], {
            "enrollment_id": G + 4811, "user_id": STUDENT, "course_id": COURSE, "course_section_id": G + SECTION,
            "type": "StudentEnrollment", "workflow_state": "invited"}, user=TEACHER),
        canvas_event("enrollment_updated", T[3], {"enrollment_id": 4811, "workflow_state": "active"}, user=STUDENT),
        canvas_event("enrollment_created", T[2], {
            "enrollment_id": 4812, "user_id": FOREIGN_STUDENT, "course_id": G + COURSE, "course_section_id": SECTION,
            "type": "StudentEnrollment", "workflow_state": "active"}, user=TEACHER),
        canvas_event("enrollment_created", T[2], {
            "enrollment_id": 4813, "user_id": G + TEACHER, "course_id": COURSE, "course_section_id": SECTION,
            "type": "TeacherEnrollment", "workflow_state": "active"}, user=G + TEACHER),
        canvas_event("assignment_created", T[2], {"assignment_id": ASSIGNMENT, "context_id": G + COURSE,
                                                   "context_type": "Course", "title": "Essay",
                                                   "points_possible": 10, "workflow_state": "published"},
                     user=TEACHER),
        canvas_event("submission_created", T[3], {"submission_id": SUBMISSION, "assignment_id": G + ASSIGNMENT,
                                                   "user_id": STUDENT, "workflow_state": "submitted"},
                     user=G + STUDENT),
        canvas_event("grade_change", T[4], {"submission_id": G + SUBMISSION, "assignment_id": ASSIGNMENT,
                                             "user_id": G + STUDENT, "score": 9, "grade": "9",
                                             "grader_id": TEACHER}, user=TEACHER),
        caliper_grade(T[5], 9.5),
        canvas_event("submission_created", T[3], {"submission_id": G + FOREIGN_SUBMISSION, "assignment_id": ASSIGNMENT,
                                                   "user_id": FOREIGN_STUDENT, "score": 7, "workflow_state": "graded"},
                     user=FOREIGN_STUDENT),
    ]


def records(payloads: list[dict] | None = None) -> list[bytes]:
    out = []
    for payload in payloads if payloads is not None else events():
        fmt = "caliper" if "data" in payload else "canvas"
        out.append(Record(source="live_event", format=fmt, received_at="2024-03-10T00:00:00+00:00",
                          payload=copy.deepcopy(payload), verification=Verification(signed=True)).to_bytes())
    return out


# The README's kind of join: every enrollment with its section, course and user.
ROSTER = """
SELECT c.name AS course, s.name AS section, u.name AS user_name, e.type, e.workflow_state
FROM {s}.enrollments e
JOIN {s}.course_sections s ON s.id = e.course_section_id
JOIN {s}.courses c ON c.id = e.course_id AND c.id = s.course_id
JOIN {s}.users u ON u.id = e.user_id
ORDER BY e.type, u.name
"""
ROSTER_ROWS = [
    ("Linear Algebra II", "Section A", "Foreign Student", "StudentEnrollment", "active"),
    ("Linear Algebra II", "Section A", "Student Two", "StudentEnrollment", "active"),
    ("Linear Algebra II", "Section A", "Teacher", "TeacherEnrollment", "active"),
]

# Scores per student: submissions with their assignment, course and user.
SCORES = """
SELECT c.name AS course, a.title, u.name AS user_name, sub.score, sub.workflow_state
FROM {s}.submissions sub
JOIN {s}.assignments a ON a.id = sub.assignment_id
JOIN {s}.courses c ON c.id = a.course_id
JOIN {s}.users u ON u.id = sub.user_id
ORDER BY u.name
"""
SCORES_ROWS = [
    ("Linear Algebra II", "Essay", "Foreign Student", 7.0, "graded"),
    ("Linear Algebra II", "Essay", "Student Two", 9.5, "submitted"),
]
