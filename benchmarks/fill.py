"""A warehouse of a few million events, fast: rows generated in SQL, not through the pipeline.

``fill_warehouse(engine_or_url, events=3_000_000, months=6, start=None)`` fills an already migrated
warehouse with an institution's worth of Canvas-format live events spread over ``months`` months
(ending now unless ``start`` is given), and the rows the writer derives from them: ``events`` with
every column the writer fills (``happening_id``, the metadata columns, ``arrival``, a realistic
payload of ~1 KB), the fact rows (``asset_accesses``, ``logins``, ``grade_changes``) and the entity
rows (``users``, ``courses``, ``course_sections``, ``assignments``, ``enrollments``,
``submissions``), each with its ``field_versions`` and ``last_event_at`` as the writer leaves them.
Ids follow Canvas Data 2's convention (``processors/normalize/ids.py``): objects of the home shard
in local form, the few users of another shard (a consortium's) in global form; payloads carry
global ids, as Canvas sends them.

The mix (``plan``, pure): ~80% page views (``asset_accessed``), ~9.5% logins and logouts, ~3% submissions,
~3.5% grade changes, and the creation events of every course, section, user, assignment and
enrollment. Activity is skewed (a few students generate many page views). Everything is a function
of the row number (``hashint8``), so a fill is reproducible.

Fast: the tables' secondary indexes are dropped while rows go in and rebuilt after (as a bulk load
does), then ``VACUUM ANALYZE`` (statistics, and the visibility map autovacuum would set on a live
warehouse, without which no index-only scan is planned). Columns are matched against the
database's own tables, so a warehouse at an older revision gets the columns it has (a NOT NULL
column the fill cannot fill is an error, never a silent default).

Partitioned history (migration 0014 on): the months filled get their partitions first
(:func:`cover_months`), fact rows are filed at the happening's second (``model.happening_time``) with
``event_time`` in their key and not in ``field_versions``, and no event is undated, as the writer
stores them; on an older revision the tables' own keys decide (there ``event_time`` is versioned).
Event times are to the millisecond, as Canvas sends them.

``tests.support.warehouse.warehouse_at(server_url, "head")`` gives the throwaway database to fill
(migrated by the project's own Alembic migrations, dropped at the end). Used by
``benchmarks/queries.py`` and the tests; meant for any benchmark that needs history at scale.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from canvas_stream.settings import async_database_url
from processors.normalize.ids import SHARD_FACTOR
from processors.warehouse import partitions
from processors.warehouse.schema import SCHEMA
from tests.support.warehouse import warehouse_at

S = SCHEMA
HOME_SHARD = 2107  # the institution's shard (CANVAS_HOME_SHARD)
FOREIGN_SHARD = 3  # a consortium member's shard: its users are stored in global form
FOREIGN_EVERY = 50  # every 50th user comes from the other shard
ROOT_ACCOUNT_UUID = "Qm7xT2vKp9LsD4wHc8NbR3yFj6ZaE1gUo5VtXiWe"
SUBSCRIPTION = "b6c1b0a4-3f7e-4a55-9d7a-3c0e6f1d2a90"
HOST = "school.instructure.com"
CHUNK = 100_000  # rows per statement: bounded temporary space, progress lines, parallel chunks
TABLES = ("events", "asset_accesses", "logins", "grade_changes", "submissions", "enrollments", "assignments",
          "course_sections", "courses", "users")


@dataclass(frozen=True)
class Plan:
    """How many of each thing a fill of ``events`` events makes (pure; see :func:`plan`)."""

    events: int
    users: int
    teachers: int  # users 1..teachers teach, the rest are students
    courses: int
    sections: int
    assignments: int  # per course: assignments / courses
    student_enrollments: int  # 4 per student
    submissions: int
    grade_changes: int
    logins: int
    logouts: int
    page_views: int

    @property
    def students(self) -> int:
        return self.users - self.teachers

    @property
    def enrollments(self) -> int:
        return self.student_enrollments + self.courses  # plus one teacher per course

    def counts(self) -> dict[str, int]:
        """Events per event name."""
        return {"course_created": self.courses, "course_section_created": self.sections,
                "user_created": self.users, "assignment_created": self.assignments,
                "enrollment_created": self.enrollments, "submission_created": self.submissions,
                "grade_change": self.grade_changes, "logged_in": self.logins, "logged_out": self.logouts,
                "asset_accessed": self.page_views}


def plan(events: int) -> Plan:
    """Sizes in proportion to ``events``: one user per 150 events, 20 users per course, 2 sections and
    12 assignments per course, 4 enrollments per student; the rest of the events are page views."""
    users = max(100, events // 150)
    teachers = max(5, users // 40)
    courses = max(10, users // 20)
    student_enrollments = 4 * (users - teachers)
    submissions = min(round(events * 0.03), 12 * student_enrollments)
    shape = Plan(events=events, users=users, teachers=teachers, courses=courses, sections=2 * courses,
                 assignments=12 * courses, student_enrollments=student_enrollments, submissions=submissions,
                 grade_changes=round(events * 0.035), logins=round(events * 0.08), logouts=round(events * 0.015),
                 page_views=0)
    others = sum(shape.counts().values())
    if events - others < events // 2:
        raise ValueError(f"{events} events are too few for a warehouse (at least ~5,000)")
    return Plan(**{**asdict(shape), "page_views": events - others})


@dataclass
class FillReport:
    """What a fill made (rows per table, as counted after) and how long each part took."""

    plan: Plan
    start: datetime
    end: datetime
    rows: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def events_per_second(self) -> float:
        return self.plan.events / max(self.seconds.get("total", 0.0), 1e-9)

    def as_dict(self) -> dict[str, Any]:
        return {"events": self.plan.events, "start": self.start.isoformat(), "end": self.end.isoformat(),
                "rows": self.rows, "seconds": self.seconds, "events_per_second": round(self.events_per_second),
                "plan": asdict(self.plan)}


# ---- SQL building blocks (text; every value is a function of the row number g) -------------------

def _h(expr: str, salt: int) -> str:
    """A pseudo-random int in [0, 2^31) from ``expr`` (deterministic)."""
    return f"(hashint8(({expr})::bigint * 1000003 + {salt}) & 2147483647)"


def _u(expr: str, salt: int) -> str:
    """A pseudo-random float in [0, 1)."""
    return f"({_h(expr, salt)} / 2147483648.0::float8)"


def _stored_user(expr: str) -> str:
    return (f"(CASE WHEN ({expr}) % {FOREIGN_EVERY} = 0 THEN {FOREIGN_SHARD * SHARD_FACTOR} + ({expr}) "
            f"ELSE ({expr}) END)")


def _global_user(expr: str) -> str:
    return (f"((CASE WHEN ({expr}) % {FOREIGN_EVERY} = 0 THEN {FOREIGN_SHARD * SHARD_FACTOR} "
            f"ELSE {HOME_SHARD * SHARD_FACTOR} END) + ({expr}))::text")


def _global(expr: str) -> str:
    return f"({HOME_SHARD * SHARD_FACTOR} + ({expr}))::text"


def _ms(expr: str) -> str:
    """A time to the millisecond, as Canvas sends ``metadata.event_time`` (and the writer parses it)."""
    return f"date_trunc('milliseconds', {expr})"


def _iso(expr: str) -> str:
    return f"to_char(({expr}) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"


USER_AGENTS = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 "
               "Safari/537.36",
               "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 "
               "Safari/605.1.15",
               "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
               "Mobile/15E148 canvas-student/7.10",
               "Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0")
PAGES = ("modules", "assignments", "grades", "files", "pages", "announcements", "discussion_topics", "syllabus")


def _array(values: tuple[str, ...]) -> str:
    return "ARRAY[" + ", ".join("'" + v.replace("'", "''") + "'" for v in values) + "]"


@dataclass(frozen=True)
class Kind:
    """One event type's rows: ``source`` selects per-row values (columns named below) from
    ``generate_series(lo, hi) g``; ``inserts`` maps tables to {column: expression over the source}."""

    name: str
    count: int
    source: str
    inserts: dict[str, dict[str, str]]


def _common(name: str, salt: int, user: str, *, context: tuple[str, str, str] | None, role: str, method: str,
            url: str, body: str) -> str:
    """The lateral select every event shares: time, ids, the acting user's metadata, the payload.

    Expects ``t`` (event time) and the user's local id (``user``) in scope; names the columns
    ``event_id``, ``happening_id``, ``request_id``, ``received_at``, ``v`` (the writer's version
    string ``time|event_id``), ``uid`` (stored form), ``login``, ``sis``, ``session``, ``ip``, ``ua``,
    ``payload``, ``arrival``."""
    ctx = ""
    if context is not None:  # (context_type, its id as the payload carries it, the account's local id)
        ctype, cid, account = context
        ctx = (f", 'context_type', {ctype}, 'context_id', {cid}, 'context_account_id', {_global(account)}, "
               f"'context_sis_source_id', 'SIS-C' || ({account}), 'context_role', {role}")
    return f"""
    CROSS JOIN LATERAL (SELECT encode(sha256(('{name}:' || g)::bytea), 'hex') AS event_id,
                               encode(sha256(('happening:{name}:' || g)::bytea), 'hex') AS happening_id,
                               md5('r{salt}' || g)::uuid::text AS request_id,
                               t + make_interval(secs => 0.4 + {_h('g', salt + 1)} % 3000 / 1000.0) AS received_at,
                               {_stored_user(user)} AS uid,
                               'user' || ({user}) || '@example.edu' AS login,
                               CASE WHEN ({user}) % 7 = 0 THEN NULL ELSE 'SIS-' || lpad(({user})::text, 7, '0') END
                                 AS sis,
                               md5('session' || ({user}) || '/' || floor(extract(epoch FROM t) / 86400)) AS session,
                               '10.' || (({user}) / 62500) % 250 || '.' || (({user}) / 250) % 250 || '.'
                                 || ({user}) % 250 AS ip,
                               ({_array(USER_AGENTS)})[1 + ({user}) % {len(USER_AGENTS)}] AS ua OFFSET 0) e
    CROSS JOIN LATERAL (SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') || '|' || e.event_id AS v,
      jsonb_build_object('metadata', jsonb_build_object(
        'event_name', '{name}', 'event_time', {_iso('t')}, 'producer', 'canvas', 'hostname', '{HOST}',
        'root_account_id', {_global('1')}, 'root_account_uuid', '{ROOT_ACCOUNT_UUID}',
        'root_account_lti_guid', '{ROOT_ACCOUNT_UUID}:canvas-lms', 'user_account_id', {_global('1')},
        'user_id', {_global_user(user)}, 'user_login', e.login, 'user_sis_id', e.sis, 'request_id', e.request_id,
        'session_id', e.session, 'client_ip', e.ip, 'user_agent', e.ua, 'http_method', '{method}',
        'url', {url}, 'referrer', 'https://{HOST}/', 'time_zone', 'America/Chicago'{ctx}),
        'body', {body}) AS payload,
      jsonb_build_object('source', 'live_event', 'verification', jsonb_build_object('signed', true,
        'kid', '2025-06-01T00:00:00Z', 'issuer', 'https://live-events.canvas.instructure.com',
        'verified_at', {_iso('e.received_at')}), 'delivery', jsonb_build_object('method', 'https',
        'subscription_id', '{SUBSCRIPTION}', 'queue', NULL, 'message_id', NULL)) AS arrival OFFSET 0) p"""


def _event_columns(name: str, *, context: tuple[str, str] | None) -> dict[str, str]:
    """The ``events`` row as ``writer.event_columns`` fills it."""
    return {
        "event_id": "event_id", "event_name": f"'{name}'", "format": "'canvas'", "event_time": "t",
        "received_at": "received_at", "user_id": "uid",
        "context_type": "NULL" if context is None else context[0],
        "context_id": "NULL" if context is None else f"({context[1]})",
        "payload": "payload", "subscription": f"'{SUBSCRIPTION}'", "root_account_uuid": f"'{ROOT_ACCOUNT_UUID}'",
        "happening_id": "happening_id", "request_id": "request_id", "real_user_id": "NULL",
        "user_login": "login", "user_sis_id": "sis", "root_account_id": "1", "arrival": "arrival",
    }


VERSIONS = "@versions@"  # stands for ``field_versions`` until the table's own key columns are known


def _versioned(columns: dict[str, str]) -> dict[str, str]:
    """Add ``field_versions`` (every column the event set, at its version; built by :func:`_statement`,
    which knows the table's key: key columns are not versioned, as in the writer) and ``last_event_at``."""
    return {**columns, "field_versions": VERSIONS, "last_event_at": "t"}


def _versions(columns: list[str], keys: frozenset[str]) -> str:
    """``field_versions``: each of ``columns`` but the key at the event's version ``v``."""
    data = [c for c in columns if c not in keys and c not in ("field_versions", "last_event_at")]
    template = "{" + ", ".join(f'"{c}": "§"' for c in data) + "}"
    return f"replace('{template}', '§', v)::jsonb"


def _fact_time(expr: str) -> str:
    """A fact row's ``event_time`` once it is part of the key (migration 0014): the happening's time to
    the second (``model.happening_time``)."""
    return f"date_trunc('second', {expr})"


COURSE = ("'Course'", _global("course"), "2 + course % 10")  # the context of most events


def kinds(shape: Plan, start: datetime, end: datetime) -> list[Kind]:
    """Every event type's generator for ``shape`` between ``start`` and ``end``."""
    span = (end - start).total_seconds()
    t0 = f"TIMESTAMPTZ '{start.isoformat()}'"
    c, te, se = shape.courses, shape.teachers, shape.student_enrollments
    step = max(1, c // 4)

    def spread(n: int, salt: int, lo: float = 0.0, hi: float = 1.0) -> str:
        """Row g of n at an even place in [lo, hi] of the span, jittered within its slot."""
        width = span * (hi - lo)
        return _ms(f"{t0} + make_interval(secs => {span * lo} + (g - 1 + {_u('g', salt)}) * {width / n})")

    # a student enrollment's student (local user id) and course, from its id (expression over `en`)
    def enr_user(en: str) -> str:
        return f"({te} + 1 + (({en}) - 1) / 4)"

    def enr_course(en: str) -> str:
        return f"(((({en}) - 1) / 4 * 37 + (({en}) - 1) % 4 * {step}) % {c} + 1)"

    due = f"{t0} + make_interval(secs => (j + 1) * {span / 13})"  # assignment j of a course: 12 due dates
    out: list[Kind] = []

    # -- entities, at term start: courses, sections, users, assignments, enrollments ------------------
    name = "course_created"
    body = (f"jsonb_build_object('course_id', {_global('g')}, 'uuid', md5('course' || g), 'account_id', "
            f"{_global('2 + g % 10')}, 'name', 'Course ' || g, 'created_at', {_iso('t')}, 'updated_at', {_iso('t')}, "
            "'workflow_state', 'available')")
    out.append(Kind(name, c, f"""
        SELECT g, t, e.*, p.* FROM generate_series(@LO@, @HI@) g
        CROSS JOIN LATERAL (SELECT {spread(c, 11, 0.0, 0.01)} AS t, ((g - 1) % {te}) + 1 AS actor OFFSET 0) a
        {_common(name, 11, 'a.actor', context=None, role="'TeacherEnrollment'", method='POST',
                 url=f"'https://{HOST}/api/v1/accounts/' || (2 + g % 10) || '/courses'", body=body)}""",
        {"events": _event_columns(name, context=None),
         "courses": _versioned({"id": "g", "name": "'Course ' || g", "course_code": "'C' || lpad(g::text, 5, '0')",
                                "account_id": "2 + g % 10", "root_account_id": "1", "uuid": "md5('course' || g)",
                                "workflow_state": "'available'", "created_at": "t", "updated_at": "t"})}))

    name = "course_section_created"
    body = (f"jsonb_build_object('course_section_id', {_global('g')}, 'course_id', {_global('(g + 1) / 2')}, "
            "'name', 'Section ' || g, 'default_section', g % 2 = 1, 'workflow_state', 'active')")
    out.append(Kind(name, shape.sections, f"""
        SELECT g, t, e.*, p.* FROM generate_series(@LO@, @HI@) g
        CROSS JOIN LATERAL (SELECT {spread(shape.sections, 12, 0.0, 0.01)} AS t, (((g + 1) / 2 - 1) % {te}) + 1
                                   AS actor OFFSET 0) a
        {_common(name, 12, 'a.actor', context=("'Course'", _global('(g + 1) / 2'), '2 + ((g + 1) / 2) % 10'),
                 role="'TeacherEnrollment'", method='POST',
                 url=f"'https://{HOST}/api/v1/courses/' || (g + 1) / 2 || '/sections'", body=body)}""",
        {"events": _event_columns(name, context=("'Course'", "(g + 1) / 2")),
         "course_sections": _versioned({"id": "g", "course_id": "(g + 1) / 2", "name": "'Section ' || g",
                                        "root_account_id": "1", "default_section": "g % 2 = 1",
                                        "workflow_state": "'active'"})}))

    name = "user_created"
    body = (f"jsonb_build_object('user_id', {_global_user('g')}, 'uuid', md5('user' || g), 'name', "
            "'Person ' || g, 'short_name', 'Person ' || g, 'workflow_state', 'registered', "
            f"'created_at', {_iso('t')}, 'updated_at', {_iso('t')})")
    out.append(Kind(name, shape.users, f"""
        SELECT g, t, e.*, p.* FROM generate_series(@LO@, @HI@) g
        CROSS JOIN LATERAL (SELECT {spread(shape.users, 13, 0.0, 0.02)} AS t OFFSET 0) a
        {_common(name, 13, 'g', context=None, role="'Student'", method='POST',
                 url=f"'https://{HOST}/api/v1/accounts/1/users'", body=body)}""",
        {"events": _event_columns(name, context=None),
         "users": _versioned({"id": _stored_user("g"), "name": "'Person ' || g", "short_name": "'Person ' || g",
                              "sortable_name": "'Person, ' || g", "uuid": "md5('user' || g)",
                              "workflow_state": "'registered'", "user_login": "login", "user_sis_id": "sis",
                              "created_at": "t", "updated_at": "t"})}))

    name = "assignment_created"
    body = (f"jsonb_build_object('assignment_id', {_global('g')}, 'context_id', {_global('course')}, "
            "'context_type', 'Course', 'title', 'Assignment ' || (j + 1), 'points_possible', 10 * (1 + j % 3), "
            f"'due_at', {_iso('due')}, 'submission_types', 'online_upload', 'workflow_state', 'published', "
            f"'created_at', {_iso('t')}, 'updated_at', {_iso('t')})")
    out.append(Kind(name, shape.assignments, f"""
        SELECT g, t, course, j, due, e.*, p.* FROM generate_series(@LO@, @HI@) g
        CROSS JOIN LATERAL (SELECT (g - 1) % {c} + 1 AS course, (g - 1) / {c} AS j OFFSET 0) k
        CROSS JOIN LATERAL (SELECT {spread(shape.assignments, 14, 0.0, 0.02)} AS t, {due} AS due,
                                   ((course - 1) % {te}) + 1 AS actor OFFSET 0) a
        {_common(name, 14, 'a.actor', context=COURSE, role="'TeacherEnrollment'", method='POST',
                 url=f"'https://{HOST}/api/v1/courses/' || course || '/assignments'", body=body)}""",
        {"events": _event_columns(name, context=("'Course'", "course")),
         "assignments": _versioned({"id": "g", "course_id": "course", "context_type": "'Course'",
                                    "title": "'Assignment ' || (j + 1)", "points_possible": "10 * (1 + j % 3)",
                                    "due_at": "due", "submission_types": "'online_upload'",
                                    "workflow_state": "'published'", "created_at": "t", "updated_at": "t"})}))

    name = "enrollment_created"
    course = f"CASE WHEN g <= {se} THEN {enr_course('g')} ELSE g - {se} END"
    body = (f"jsonb_build_object('enrollment_id', {_global('g')}, 'course_id', {_global('course')}, "
            f"'course_section_id', {_global('section')}, 'user_id', {_global_user('student')}, "
            "'user_name', 'Person ' || student, 'type', type, 'workflow_state', 'active', "
            f"'limit_privileges_to_course_section', false, 'created_at', {_iso('t')}, 'updated_at', {_iso('t')})")
    out.append(Kind(name, shape.enrollments, f"""
        SELECT g, t, course, section, student, type, e.*, p.* FROM generate_series(@LO@, @HI@) g
        CROSS JOIN LATERAL (SELECT {course} AS course OFFSET 0) k
        CROSS JOIN LATERAL (SELECT CASE WHEN g <= {se} THEN {enr_user('g')} ELSE (course - 1) % {te} + 1 END AS student,
                                   CASE WHEN g <= {se} THEN 'StudentEnrollment' ELSE 'TeacherEnrollment' END AS type,
                                   2 * (course - 1) + 1 + CASE WHEN g <= {se} THEN ((g - 1) / 4) % 2 ELSE 0 END
                                     AS section,
                                   {spread(shape.enrollments, 15, 0.005, 0.03)} AS t,
                                   ((course - 1) % {te}) + 1 AS actor OFFSET 0) a
        {_common(name, 15, 'a.actor', context=COURSE, role="'TeacherEnrollment'", method='POST',
                 url=f"'https://{HOST}/api/v1/sections/' || section || '/enrollments'", body=body)}""",
        {"events": _event_columns(name, context=("'Course'", "course")),
         "enrollments": _versioned({"id": "g", "course_id": "course", "course_section_id": "section",
                                    "user_id": _stored_user("student"), "user_name": "'Person ' || student",
                                    "type": "type", "workflow_state": "'active'",
                                    "limit_privileges_to_course_section": "false", "created_at": "t",
                                    "updated_at": "t"})}))

    # -- submissions: student enrollment x assignment of its course, before the due date --------------
    name = "submission_created"
    body = (f"jsonb_build_object('submission_id', {_global('g')}, 'assignment_id', {_global('assignment')}, "
            f"'user_id', {_global_user('student')}, 'submission_type', 'online_upload', 'workflow_state', "
            f"'submitted', 'attempt', 1, 'late', false, 'missing', false, 'submitted_at', {_iso('t')}, "
            f"'created_at', {_iso('t')}, 'updated_at', {_iso('t')})")
    out.append(Kind(name, shape.submissions, f"""
        SELECT g, t, assignment, student, course, e.*, p.* FROM generate_series(@LO@, @HI@) g
        CROSS JOIN LATERAL (SELECT (g - 1) % {se} + 1 AS en, ((g - 1) / {se}) % 12 AS j OFFSET 0) k
        CROSS JOIN LATERAL (SELECT {enr_user('en')} AS student, {enr_course('en')} AS course OFFSET 0) u
        CROSS JOIN LATERAL (SELECT j * {c} + course AS assignment,
                                   {_ms(f"greatest({t0}, {due} - make_interval(secs => 60 + {_h('g', 16)} % 259200))")}
                                     AS t
                            OFFSET 0) a
        {_common(name, 16, 'u.student', context=COURSE, role="'StudentEnrollment'", method='POST',
                 url=f"'https://{HOST}/api/v1/courses/' || course || '/assignments/' || assignment || '/submissions'",
                 body=body)}""",
        {"events": _event_columns(name, context=("'Course'", "course")),
         "submissions": _versioned({"id": "g", "assignment_id": "assignment", "user_id": _stored_user("student"),
                                    "workflow_state": "'submitted'", "submission_type": "'online_upload'",
                                    "attempt": "1", "late": "false", "missing": "false", "submitted_at": "t",
                                    "created_at": "t", "updated_at": "t", "course_id": "course"})}))

    # -- grade changes: each submission graded after it was submitted, some regraded --------------------
    name = "grade_change"
    n_sub = max(1, shape.submissions)
    body = (f"jsonb_build_object('submission_id', {_global('submission')}, 'assignment_id', {_global('assignment')}, "
            f"'user_id', {_global_user('student')}, 'student_id', {_global_user('student')}, 'student_sis_id', "
            f"'SIS-' || lpad(student::text, 7, '0'), 'grader_id', {_global_user('grader')}, 'score', score, "
            "'old_score', old_score, 'grade', score::text, 'old_grade', old_score::text, 'points_possible', "
            "points, 'old_points_possible', points, 'grading_complete', true, 'muted', false)")
    out.append(Kind(name, shape.grade_changes, f"""
        SELECT g, t, submission, assignment, student, course, grader, score, old_score, points, e.*, p.*
        FROM generate_series(@LO@, @HI@) g
        CROSS JOIN LATERAL (SELECT (g - 1) % {n_sub} + 1 AS submission, (g - 1) / {n_sub} AS rnd OFFSET 0) s
        CROSS JOIN LATERAL (SELECT (submission - 1) % {se} + 1 AS en, ((submission - 1) / {se}) % 12 AS j OFFSET 0) k
        CROSS JOIN LATERAL (SELECT {enr_user('en')} AS student, {enr_course('en')} AS course OFFSET 0) u
        CROSS JOIN LATERAL (SELECT j * {c} + course AS assignment, (course - 1) % {te} + 1 AS grader,
                                   10 * (1 + j % 3) AS points,
                                   date_trunc('milliseconds', least(
                                         TIMESTAMPTZ '{end.isoformat()}' - interval '1 second',
                                         greatest({t0}, {due} - make_interval(secs => 60 + {_h('submission', 16)}
                                                                                   % 259200))
                                         + make_interval(secs => 3600 + {_h('g', 17)} % 604800 + rnd * 259200))) AS t
                            OFFSET 0) a
        CROSS JOIN LATERAL (SELECT ({_h('g', 18)} % (a.points * 10 + 1)) / 10.0 AS score,
                                   CASE WHEN rnd > 0 THEN ({_h('g - ' + str(n_sub), 18)} % (a.points * 10 + 1))
                                        / 10.0 END AS old_score OFFSET 0) sc
        {_common(name, 17, 'a.grader', context=COURSE, role="'TeacherEnrollment'", method='PUT',
                 url=f"'https://{HOST}/api/v1/courses/' || course || '/assignments/' || assignment "
                     "|| '/submissions/' || student",
                 body=body)}""",
        {"events": _event_columns(name, context=("'Course'", "course")),
         "grade_changes": _versioned({"happening_id": "happening_id", "event_id": "event_id",
                                      "submission_id": "submission", "assignment_id": "assignment",
                                      "user_id": _stored_user("student"), "grader_id": _stored_user("grader"),
                                      "score": "score", "old_score": "old_score", "grade": "score::text",
                                      "old_grade": "old_score::text", "points_possible": "points",
                                      "old_points_possible": "points", "grading_complete": "true", "muted": "false",
                                      "event_time": "t", "student_id": _stored_user("student"),
                                      "student_sis_id": "'SIS-' || lpad(student::text, 7, '0')",
                                      "root_account_uuid": f"'{ROOT_ACCOUNT_UUID}'"})}))

    # -- logins and logouts, anyone, all through the span ------------------------------------------------
    for name, count, salt in (("logged_in", shape.logins, 19), ("logged_out", shape.logouts, 20)):
        user = f"(1 + floor({shape.users} * power({_u('g', salt + 100)}, 1.6))::int)"
        body = "jsonb_build_object('redirect_url', 'https://" + HOST + "/')" if name == "logged_in" \
            else "'{}'::jsonb"
        out.append(Kind(name, count, f"""
            SELECT g, t, usr, e.*, p.* FROM generate_series(@LO@, @HI@) g
            CROSS JOIN LATERAL (SELECT {spread(count, salt)} AS t, {user} AS usr OFFSET 0) a
            {_common(name, salt, 'a.usr', context=None, role="'Student'", method='POST',
                     url=f"'https://{HOST}/login/canvas'", body=body)}""",
            {"events": _event_columns(name, context=None),
             "logins": _versioned({"happening_id": "happening_id", "event_id": "event_id",
                                   "event_name": f"'{name}'", "event_time": "t", "user_id": "uid",
                                   **({"redirect_url": f"'https://{HOST}/'"} if name == "logged_in" else {}),
                                   "client_ip": "ip", "session_id": "session", "user_agent": "ua",
                                   "hostname": f"'{HOST}'", "user_login": "login", "user_sis_id": "sis",
                                   "root_account_uuid": f"'{ROOT_ACCOUNT_UUID}'"})}))

    # -- page views: a student's enrollment (skewed), mostly course pages ------------------------------
    name = "asset_accessed"
    pv = shape.page_views
    body = ("jsonb_build_object('asset_id', CASE WHEN r < 5 THEN cid_global ELSE " + _global("asset_id") + " END, "
            "'asset_type', asset_type, 'asset_subtype', "
            "asset_subtype, 'asset_name', asset_name, 'category', category, 'role', 'StudentEnrollment', "
            "'level', NULL, 'filename', filename, 'display_name', filename)")
    out.append(Kind(name, pv, f"""
        SELECT g, t, course, student, ctype, cid, r, asset_id, asset_type, asset_subtype, asset_name, category,
               filename, e.*, p.* FROM generate_series(@LO@, @HI@) g
        CROSS JOIN LATERAL (SELECT {spread(pv, 21)} AS t,
                                   1 + floor({se} * power({_u('g', 121)}, 2))::int AS en,
                                   {_h('g', 122)} % 100 AS r, {_h('g', 123)} AS x OFFSET 0) k
        CROSS JOIN LATERAL (SELECT {enr_user('en')} AS student, {enr_course('en')} AS course OFFSET 0) u
        CROSS JOIN LATERAL (SELECT CASE WHEN r < 5 THEN 'User' ELSE 'Course' END AS ctype,
                                   CASE WHEN r < 5 THEN {_stored_user('student')} ELSE course END AS cid,
                                   CASE WHEN r < 5 THEN {_global_user('student')} ELSE {_global('course')} END
                                     AS cid_global,
                                   CASE WHEN r < 5 THEN {_stored_user('student')} WHEN r < 55 THEN course
                                        WHEN r < 80 THEN (x % 12) * {c} + course
                                        WHEN r < 92 THEN course * 100 + x % 40 ELSE course * 1000 + x % 200 END
                                     AS asset_id,
                                   CASE WHEN r < 5 THEN 'user' WHEN r < 55 THEN 'course' WHEN r < 80 THEN 'assignment'
                                        WHEN r < 92 THEN 'wiki_page' ELSE 'attachment' END AS asset_type,
                                   CASE WHEN r < 5 THEN 'dashboard' WHEN r < 55
                                        THEN ({_array(PAGES)})[1 + x % {len(PAGES)}] END AS asset_subtype,
                                   CASE WHEN r < 5 THEN NULL WHEN r < 55 THEN 'Course ' || course
                                        WHEN r < 80 THEN 'Assignment ' || (x % 12 + 1)
                                        WHEN r < 92 THEN 'Week ' || (x % 40 + 1) ELSE NULL END AS asset_name,
                                   CASE WHEN r < 5 THEN 'dashboard' WHEN r < 55
                                        THEN ({_array(PAGES)})[1 + x % {len(PAGES)}]
                                        WHEN r < 80 THEN 'assignments' WHEN r < 92 THEN 'wiki' ELSE 'files' END
                                     AS category,
                                   CASE WHEN r >= 92 THEN 'lecture-' || (x % 200) || '.pdf' END AS filename OFFSET 0) a
        {_common(name, 21, 'u.student', context=('a.ctype', 'a.cid_global', '2 + u.course % 10'),
                 role="'StudentEnrollment'", method='GET',
                 url=f"'https://{HOST}/courses/' || course || '/' || coalesce(asset_subtype, asset_type)",
                 body=body)}""",
        {"events": _event_columns(name, context=("ctype", "cid")),
         "asset_accesses": _versioned({
             "happening_id": "happening_id", "event_id": "event_id", "event_time": "t", "user_id": "uid",
             "asset_id": "asset_id", "asset_type": "asset_type", "asset_subtype": "asset_subtype",
             "asset_name": "asset_name", "category": "category", "role": "'StudentEnrollment'", "level": "NULL",
             "filename": "filename", "display_name": "filename", "context_type": "ctype", "context_id": "cid",
             "context_account_id": "2 + course % 10", "http_method": "'GET'",
             "request_url": f"'https://{HOST}/courses/' || course || '/' || coalesce(asset_subtype, asset_type)",
             "client_ip": "ip", "session_id": "session", "user_agent": "ua", "user_login": "login",
             "user_sis_id": "sis", "root_account_uuid": f"'{ROOT_ACCOUNT_UUID}'"})}))
    return out


# ---- running it ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Shape:
    """A table as the database has it now: column -> (nullable, has a default), and its key columns."""

    columns: dict[str, tuple[bool, bool]]
    keys: frozenset[str]


async def _table_shape(conn, table: str) -> Shape:
    rows = (await conn.exec_driver_sql(
        "SELECT column_name, is_nullable = 'YES', column_default IS NOT NULL FROM information_schema.columns "
        f"WHERE table_schema = '{S}' AND table_name = '{table}'")).all()
    keys = (await conn.exec_driver_sql(
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
        f"WHERE i.indisprimary AND i.indrelid = '{S}.{table}'::regclass")).scalars().all()
    return Shape({name: (nullable, default) for name, nullable, default in rows}, frozenset(keys))


def _statement(kind: Kind, shapes: dict[str, Shape], lo: int, hi: int) -> str:
    """One data-modifying statement: the source once (materialized), one INSERT per table."""
    inserts = []
    for table, values in kind.inserts.items():
        have, keys = shapes[table].columns, shapes[table].keys
        chosen = {c: expr for c, expr in values.items() if c in have}
        if "field_versions" in chosen:
            chosen["field_versions"] = _versions(list(chosen), keys)
        if table != "events" and "event_time" in keys and "event_time" in chosen:  # a partitioned fact table
            chosen["event_time"] = _fact_time(chosen["event_time"])
        missing = [c for c, (nullable, default) in have.items() if not nullable and not default and c not in chosen]
        if missing:
            raise RuntimeError(f"fill cannot fill NOT NULL column(s) {missing} of {table}")
        # Values that are NULL literals become NULL of the column's type through the INSERT's target list.
        inserts.append(f"INSERT INTO {S}.{table} ({', '.join(chosen)}) SELECT {', '.join(chosen.values())} FROM src")
    ctes = [f"src AS MATERIALIZED ({kind.source.replace('@LO@', str(lo)).replace('@HI@', str(hi))})"]
    ctes += [f"w{i} AS ({sql})" for i, sql in enumerate(inserts[:-1])]
    return f"WITH {', '.join(ctes)} {inserts[-1]}"


async def _secondary_indexes(conn, tables: tuple[str, ...]) -> list[tuple[str, str]]:
    """(name, definition) of every index on ``tables`` that backs no constraint."""
    names = ", ".join(f"'{t}'" for t in tables)
    return [tuple(r) for r in (await conn.exec_driver_sql(
        f"SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.schemaname = '{S}' AND i.tablename IN ({names}) "
        "AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = "
        "(quote_ident(i.schemaname) || '.' || quote_ident(i.indexname))::regclass)")).all()]


async def cover_months(conn: AsyncConnection, start: datetime, end: datetime) -> list[str]:
    """A partitioned warehouse (migration 0014 on): a partition for each month from ``start`` to ``end``
    (and the months ahead of it), so the rows go to their month, not all to ``<table>_before`` (which an
    empty warehouse ends at the current month). ``_before`` is moved back to ``start``'s month while it is
    empty (as retention moves it forward), then ``partitions.ensure_partitions_in`` adds the months.
    Returns the partitions created; none on plain tables (before 0014)."""
    await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": partitions.PARTITION_LOCK})
    first = partitions.Month.of(start)
    for table, parts in (await partitions.list_partitions(conn)).items():
        before = next((p for p in parts if p.is_before), None)
        if before is None or before.upper <= first:
            continue
        if (await conn.execute(text(f"SELECT EXISTS (SELECT 1 FROM {partitions.qualified(before.name)})"))).scalar():
            raise RuntimeError(f"{before.name} holds rows: fill an empty warehouse")
        for statement in partitions.drop_partition_sql(table, before.name):
            await conn.execute(text(statement))
        await partitions.create_partition(conn, table, before.name, None, first)
    return await partitions.ensure_partitions_in(conn, end, partitions.DEFAULT_AHEAD_MONTHS)


def _engine(engine_or_url: AsyncEngine | str) -> tuple[AsyncEngine, bool]:
    if isinstance(engine_or_url, AsyncEngine):
        return engine_or_url, False
    return create_async_engine(async_database_url(engine_or_url), pool_size=4), True


async def fill_warehouse(engine_or_url: AsyncEngine | str, *, events: int = 3_000_000, months: int = 6,
                         start: datetime | None = None, jobs: int = 2, rebuild_indexes: bool = True,
                         log: Callable[[str], None] | None = print) -> FillReport:
    """Fill a migrated warehouse with ``events`` events over ``months`` months from ``start`` (default:
    ending now), then rebuild its indexes and ``VACUUM ANALYZE``. Meant for an empty warehouse: the
    rows' ids start at 1, so a second fill into the same tables collides on their keys. ``jobs``: statements
    run at once (one connection each; PostgreSQL builds the JSON, so this is the CPU cores it may use).
    ``rebuild_indexes=False`` keeps the indexes in place while rows go in (slower: to measure that cost)."""
    shape = plan(events)
    length = timedelta(days=round(30.44 * months))
    if start is None:
        end = datetime.now(UTC).replace(microsecond=0)
        start = end - length
    else:
        end = start + length
    report = FillReport(shape, start, end)
    engine, own = _engine(engine_or_url)
    say = log or (lambda _line: None)
    began = time.perf_counter()
    try:
        async with engine.begin() as conn:
            shapes = {t: await _table_shape(conn, t) for t in TABLES}
            created = await cover_months(conn, start, end)
            if created:
                say(f"{len(created)} monthly partitions created ({created[0]} ...)")
            indexes = await _secondary_indexes(conn, TABLES) if rebuild_indexes else []
            for name, _ in indexes:
                await conn.exec_driver_sql(f"DROP INDEX {S}.{name}")
        for kind in kinds(shape, start, end):
            moment = time.perf_counter()
            chunks = [(lo, min(kind.count, lo + CHUNK - 1)) for lo in range(1, kind.count + 1, CHUNK)]

            async def insert(lo: int, hi: int, kind: Kind = kind) -> None:
                async with engine.begin() as conn:
                    await conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
                    await conn.exec_driver_sql("SET LOCAL enable_memoize = off")  # every row differs
                    await conn.exec_driver_sql(_statement(kind, shapes, lo, hi))
                if kind.count > CHUNK:
                    say(f"  {kind.name}: rows {lo:,}-{hi:,} of {kind.count:,}")

            for first in range(0, len(chunks), jobs):  # ``jobs`` chunks at a time, each on its own connection
                await asyncio.gather(*(insert(lo, hi) for lo, hi in chunks[first:first + jobs]))
            report.seconds[kind.name] = round(time.perf_counter() - moment, 1)
            say(f"{kind.name}: {kind.count:,} events in {report.seconds[kind.name]} s")
        moment = time.perf_counter()
        async with engine.begin() as conn:  # the writer's grade_change also sets the submission's grade
            await conn.exec_driver_sql(f"""
                UPDATE {S}.submissions s SET score = g.score, grade = g.grade, grader_id = g.grader_id,
                       workflow_state = 'graded', graded_at = g.event_time,
                       field_versions = s.field_versions || jsonb_build_object(
                         'score', g.v, 'grade', g.v, 'grader_id', g.v, 'assignment_id', g.v, 'user_id', g.v),
                       last_event_at = greatest(s.last_event_at, g.last_event_at)
                FROM (SELECT DISTINCT ON (submission_id) submission_id, score, grade, grader_id, event_time,
                             last_event_at, field_versions ->> 'score' AS v  -- the event's version, to the microsecond
                      FROM {S}.grade_changes ORDER BY submission_id, field_versions ->> 'score' COLLATE "C" DESC) g
                WHERE s.id = g.submission_id""")
        report.seconds["submission_grades"] = round(time.perf_counter() - moment, 1)
        moment = time.perf_counter()
        async with engine.begin() as conn:
            for name, definition in indexes:  # a partitioned table's index is defined ON ONLY the parent
                await conn.exec_driver_sql(definition.replace(" ON ONLY ", " ON "))
                say(f"index {name} rebuilt")
        report.seconds["indexes"] = round(time.perf_counter() - moment, 1)
        moment = time.perf_counter()
        async with engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            for table in TABLES:
                await conn.exec_driver_sql(f"VACUUM (ANALYZE) {S}.{table}")
            for table in TABLES:
                report.rows[table] = (await conn.exec_driver_sql(f"SELECT count(*) FROM {S}.{table}")).scalar_one()
        report.seconds["vacuum_analyze"] = round(time.perf_counter() - moment, 1)
    finally:
        if own:
            await engine.dispose()
    report.seconds["total"] = round(time.perf_counter() - began, 1)
    say(f"filled {events:,} events in {report.seconds['total']} s ({report.events_per_second:,.0f} events/s)")
    return report


async def _main(events: int, months: int) -> None:
    server = os.environ.get("DATABASE_URL", "").strip()
    if not server:
        raise SystemExit("DATABASE_URL must name a PostgreSQL server (a throwaway database is created on it)")
    async with warehouse_at(server, "head") as (_, engine):
        report = await fill_warehouse(engine, events=events, months=months)
        print(json.dumps(report.as_dict(), indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Fill a throwaway warehouse and report the fill rate.")
    parser.add_argument("--events", type=int, default=3_000_000)
    parser.add_argument("--months", type=int, default=6)
    arguments = parser.parse_args()
    asyncio.run(_main(arguments.events, arguments.months))
