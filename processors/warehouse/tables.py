"""Warehouse tables, defined once: used by the writer, by Alembic and by the data dictionary.

Every entity and fact table shares one contract with the writer: its key columns, the data
columns normalizers may set, ``last_event_at`` (the newest event that touched the row) and
``field_versions`` (column -> version of the event that set it), which makes upserts order-safe
per column.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    MetaData,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, TIMESTAMP

SCHEMA = "canvas"
metadata = MetaData(schema=SCHEMA)

TZ = TIMESTAMP(timezone=True)
VERSION_COLUMNS = ("last_event_at", "field_versions")


def entity_table(name: str, keys: list[Column], *columns: Column, comment: str, fed_by: list[str]) -> Table:
    """A current-state (or fact) table with the versioning columns the writer relies on."""
    return Table(
        name,
        metadata,
        *keys,
        *columns,
        Column("last_event_at", TZ, comment="Time of the newest event that changed this row."),
        Column(
            "field_versions",
            JSONB,
            nullable=False,
            server_default=text("'{}'::jsonb"),
            comment="Per column, the event time and id that set it (the order-safety guard).",
        ),
        comment=comment,
        info={"fed_by": fed_by},
    )


def id_column(comment: str = "Canvas global id.") -> Column:
    return Column("id", BigInteger, primary_key=True, autoincrement=False, comment=comment)


events = Table(
    "events",
    metadata,
    Column("event_id", Text, primary_key=True,
           comment="Caliper: the event id; Canvas format: sha256 of the canonical event."),
    Column("event_name", Text, nullable=False, comment="Canvas event name, e.g. grade_change, both formats."),
    Column("format", Text, nullable=False, comment="canvas, caliper or lti_notice."),
    Column("event_time", TZ, comment="When the event happened (metadata.event_time / eventTime)."),
    Column("received_at", TZ, nullable=False, comment="Earliest time the ingress received it."),
    Column("user_id", BigInteger, comment="Acting user (metadata.user_id / Caliper actor)."),
    Column("context_type", Text, comment="Course, Account, Group, ..."),
    Column("context_id", BigInteger, comment="Canvas id of the context."),
    Column("payload", JSONB, nullable=False, comment="The event as received."),
    Index("events_name_time_idx", "event_name", "event_time"),
    Index("events_context_idx", "context_id", "event_time"),
    comment="One row per distinct event; a Caliper envelope yields one row per data[] item.",
    info={"fed_by": ["every event"]},
)

quarantine = Table(
    "quarantine",
    metadata,
    Column("id", Text, primary_key=True, comment="sha256 of the raw message (idempotent)."),
    Column("received_at", TZ, nullable=False, server_default=text("now()")),
    Column("reason", Text, nullable=False, comment="Why it could not be normalized or stored."),
    Column("source", Text, comment="live_event, lti_notice or kafka."),
    Column("raw", Text, nullable=False, comment="The raw record or message, as received."),
    Column("retried_at", TZ, comment="When an operator last retried it."),
    Column("resolved", Boolean, nullable=False, server_default=text("false")),
    comment="Authentic deliveries that broke normalization or a constraint; nothing is dropped.",
    info={"fed_by": ["any event that fails"]},
)

courses = entity_table(
    "courses",
    [id_column("Canvas global course id.")],
    Column("name", Text),
    Column("course_code", Text),
    Column("account_id", BigInteger),
    Column("root_account_id", BigInteger),
    Column("enrollment_term_id", BigInteger),
    Column("sis_source_id", Text),
    Column("uuid", Text),
    Column("workflow_state", Text),
    Column("created_at", TZ),
    Column("updated_at", TZ),
    Column("start_at", TZ),
    Column("conclude_at", TZ),
    comment="Current state of each course.",
    fed_by=["course_created", "course_updated", "course_completed"],
)

users = entity_table(
    "users",
    [id_column("Canvas global user id.")],
    Column("name", Text),
    Column("short_name", Text),
    Column("sortable_name", Text),
    Column("uuid", Text),
    Column("workflow_state", Text),
    Column("user_login", Text),
    Column("user_sis_id", Text),
    Column("created_at", TZ),
    Column("updated_at", TZ),
    comment="Current state of each user.",
    fed_by=["user_created", "user_updated"],
)

enrollments = entity_table(
    "enrollments",
    [id_column("Canvas global enrollment id.")],
    Column("course_id", BigInteger),
    Column("course_section_id", BigInteger),
    Column("user_id", BigInteger),
    Column("user_name", Text),
    Column("type", Text, comment="StudentEnrollment, TeacherEnrollment, ..."),
    Column("workflow_state", Text),
    Column("associated_user_id", BigInteger),
    Column("limit_privileges_to_course_section", Boolean),
    Column("created_at", TZ),
    Column("updated_at", TZ),
    comment="Current state of each enrollment.",
    fed_by=["enrollment_created", "enrollment_updated"],
)

assignments = entity_table(
    "assignments",
    [id_column("Canvas global assignment id.")],
    Column("course_id", BigInteger),
    Column("context_type", Text),
    Column("assignment_group_id", BigInteger),
    Column("title", Text),
    Column("description", Text),
    Column("points_possible", Float),
    Column("due_at", TZ),
    Column("unlock_at", TZ),
    Column("lock_at", TZ),
    Column("submission_types", Text),
    Column("workflow_state", Text),
    Column("created_at", TZ),
    Column("updated_at", TZ),
    comment="Current state of each assignment.",
    fed_by=["assignment_created", "assignment_updated"],
)

submissions = entity_table(
    "submissions",
    [id_column("Canvas global submission id.")],
    Column("assignment_id", BigInteger),
    Column("user_id", BigInteger),
    Column("grader_id", BigInteger),
    Column("workflow_state", Text),
    Column("score", Float),
    Column("grade", Text),
    Column("submission_type", Text),
    Column("attempt", BigInteger),
    Column("late", Boolean),
    Column("missing", Boolean),
    Column("submitted_at", TZ),
    Column("graded_at", TZ),
    Column("updated_at", TZ),
    comment="Current state of each submission, from submission events and grade_change.",
    fed_by=["submission_created", "submission_updated", "grade_change"],
)

grade_changes = entity_table(
    "grade_changes",
    [Column("event_id", Text, primary_key=True, comment="The grade_change event.")],
    Column("submission_id", BigInteger),
    Column("assignment_id", BigInteger),
    Column("user_id", BigInteger, comment="The student."),
    Column("grader_id", BigInteger),
    Column("score", Float),
    Column("old_score", Float),
    Column("grade", Text),
    Column("old_grade", Text),
    Column("points_possible", Float),
    Column("old_points_possible", Float),
    Column("grading_complete", Boolean),
    Column("muted", Boolean),
    Column("event_time", TZ),
    comment="One row per grade_change event (history).",
    fed_by=["grade_change"],
)


def warehouse_tables() -> list[Table]:
    """The tables the writer upserts row changes into (all but events and quarantine)."""
    return [t for t in metadata.sorted_tables if "field_versions" in t.c]
