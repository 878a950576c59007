"""Built for analysts' queries: indexes on the join and filter columns of the documented example
queries, and a read-only group role.

The role (``ANALYST_ROLE``, default ``canvas_stream_analyst``) has no login of its own: people's
logins are granted it (``GRANT canvas_stream_analyst TO alice``). It gets USAGE on the warehouse
schema and SELECT on its tables and views, now and (default privileges of the migrating user) for
tables later migrations create; nothing else. Where the migrating user may not create roles, the
migration says so in its log and goes on; a superuser can create the role and rerun the grants
(docs/analysts.md). A downgrade revokes the grants and keeps the role, which people may hold.

Revision ID: 0007b
Revises: 0007
Create Date: 2027-01-10
"""

from collections.abc import Sequence

import structlog
from alembic import op
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from canvas_stream.settings import Settings
from processors.warehouse.schema import SCHEMA

revision: str = "0007b"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = structlog.get_logger("migrations.0007b")

# name, table, columns, partial-index predicate
INDEXES = (
    ("events_user_time_idx", "events", ["user_id", "event_time"], None),
    ("quarantine_unresolved_idx", "quarantine", ["received_at"], "NOT resolved"),
    ("course_sections_course_idx", "course_sections", ["course_id"], None),
    ("enrollments_course_idx", "enrollments", ["course_id"], None),
    ("enrollments_user_idx", "enrollments", ["user_id"], None),
    ("enrollments_section_idx", "enrollments", ["course_section_id"], None),
    ("assignments_course_idx", "assignments", ["course_id"], None),
    ("submissions_assignment_idx", "submissions", ["assignment_id"], None),
    ("submissions_user_idx", "submissions", ["user_id"], None),
    ("grade_changes_submission_idx", "grade_changes", ["submission_id", "event_time"], None),
    ("asset_accesses_context_idx", "asset_accesses", ["context_id", "event_time"], None),
    ("asset_accesses_user_idx", "asset_accesses", ["user_id", "event_time"], None),
)


def _role_exists(bind, role: str) -> bool:
    return bind.execute(text("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :r)"), {"r": role}).scalar_one()


def _ensure_role(bind, role: str) -> bool:
    """Create the group role when it is missing; False (logged) when this user may not."""
    if _role_exists(bind, role):
        return True
    try:
        with bind.begin_nested():
            bind.exec_driver_sql(f"CREATE ROLE {role} NOLOGIN")
        log.info("created the analysts' read-only group role", role=role)
        return True
    except DBAPIError as exc:
        if _role_exists(bind, role):  # created meanwhile by a concurrent migration
            return True
        log.warning("could not create the analysts' read-only group role; ask a superuser to create it "
                    "(CREATE ROLE ... NOLOGIN) and run the grants in docs/analysts.md", role=role,
                    reason=str(exc.orig).splitlines()[0][:200])
        return False


def upgrade() -> None:
    for name, table, columns, where in INDEXES:
        op.create_index(name, table, columns, schema=SCHEMA, if_not_exists=True,
                        **({"postgresql_where": text(where)} if where else {}))
    bind = op.get_bind()
    role = Settings().analyst_role
    if _ensure_role(bind, role):
        bind.exec_driver_sql(f"GRANT USAGE ON SCHEMA {SCHEMA} TO {role}")
        bind.exec_driver_sql(f"GRANT SELECT ON ALL TABLES IN SCHEMA {SCHEMA} TO {role}")
        bind.exec_driver_sql(f"ALTER DEFAULT PRIVILEGES IN SCHEMA {SCHEMA} GRANT SELECT ON TABLES TO {role}")


def downgrade() -> None:
    bind = op.get_bind()
    role = Settings().analyst_role
    if _role_exists(bind, role):
        bind.exec_driver_sql(f"ALTER DEFAULT PRIVILEGES IN SCHEMA {SCHEMA} REVOKE SELECT ON TABLES FROM {role}")
        bind.exec_driver_sql(f"REVOKE SELECT ON ALL TABLES IN SCHEMA {SCHEMA} FROM {role}")
        bind.exec_driver_sql(f"REVOKE USAGE ON SCHEMA {SCHEMA} FROM {role}")
    for name, _, _, _ in reversed(INDEXES):
        op.drop_index(name, schema=SCHEMA, if_exists=True)
