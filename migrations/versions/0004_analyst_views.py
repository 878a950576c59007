"""Views for the questions analysts ask first, and helpers for Canvas global ids.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from alembic import op

from processors.warehouse.schema import SCHEMA  # the configured schema (WAREHOUSE_SCHEMA)

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

VIEWS = {
    "current_grades": (
        "Current score and grade per student and assignment (deleted submissions left out).",
        f"""
        SELECT s.id AS submission_id, a.course_id, s.assignment_id, a.title AS assignment_title,
               s.user_id, u.name AS user_name, s.score, s.grade, a.points_possible,
               s.workflow_state, s.submitted_at, s.graded_at, s.last_event_at
        FROM {SCHEMA}.submissions s
        LEFT JOIN {SCHEMA}.assignments a ON a.id = s.assignment_id
        LEFT JOIN {SCHEMA}.users u ON u.id = s.user_id
        WHERE s.workflow_state IS DISTINCT FROM 'deleted'
        """,
    ),
    "active_enrollments": (
        "Active enrollments per course, with the user name and role.",
        f"""
        SELECT e.course_id, c.name AS course_name, e.user_id, u.name AS user_name, e.type,
               e.course_section_id, e.last_event_at
        FROM {SCHEMA}.enrollments e
        LEFT JOIN {SCHEMA}.courses c ON c.id = e.course_id
        LEFT JOIN {SCHEMA}.users u ON u.id = e.user_id
        WHERE e.workflow_state = 'active'
        """,
    ),
    "active_enrollment_counts": (
        "Number of active enrollments per course and role.",
        f"""
        SELECT course_id, type, count(*) AS enrollments
        FROM {SCHEMA}.enrollments WHERE workflow_state = 'active'
        GROUP BY course_id, type
        """,
    ),
    "daily_active_users": (
        "Distinct users per UTC day who logged in or accessed an asset.",
        f"""
        SELECT (event_time AT TIME ZONE 'UTC')::date AS day, count(DISTINCT user_id) AS active_users
        FROM {SCHEMA}.events
        WHERE event_name IN ('logged_in', 'asset_accessed') AND user_id IS NOT NULL AND event_time IS NOT NULL
        GROUP BY 1
        """,
    ),
}


# Canvas global ids are shard * 10^13 + local id; a shard migration changes the global id, and the
# Canvas UI shows local ids, so analysts need both halves.
ID_FUNCTIONS = (
    f"CREATE OR REPLACE FUNCTION {SCHEMA}.local_id(global_id bigint) RETURNS bigint "
    "LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT global_id % 10000000000000 $$",
    f"COMMENT ON FUNCTION {SCHEMA}.local_id(bigint) IS 'The local (per-shard) part of a Canvas global id.'",
    f"CREATE OR REPLACE FUNCTION {SCHEMA}.shard_id(global_id bigint) RETURNS bigint "
    "LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT global_id / 10000000000000 $$",
    f"COMMENT ON FUNCTION {SCHEMA}.shard_id(bigint) IS 'The shard part of a Canvas global id.'",
)


def upgrade() -> None:
    for statement in ID_FUNCTIONS:
        op.execute(statement)
    for name, (comment, query) in VIEWS.items():
        op.execute(f"CREATE OR REPLACE VIEW {SCHEMA}.{name} AS {query}")
        quoted = comment.replace("'", "''")
        op.execute(f"COMMENT ON VIEW {SCHEMA}.{name} IS '{quoted}'")


def downgrade() -> None:
    for name in reversed(list(VIEWS)):
        op.execute(f"DROP VIEW IF EXISTS {SCHEMA}.{name}")
    op.execute(f"DROP FUNCTION IF EXISTS {SCHEMA}.local_id(bigint)")
    op.execute(f"DROP FUNCTION IF EXISTS {SCHEMA}.shard_id(bigint)")
