"""Erasure's bookkeeping (erasures, erased_users) and the comments that say what a column means for a person.

- ``erasures``: the audit of ``canvas-stream erase`` (who asked, when, rows per table; nothing about
  the person).
- ``erased_users``: the suppression list the workers read, so that events arriving after an erasure
  are redacted on arrival (ids and opaque ids, salted hashes of login, email, SIS id and names).
- Column comments of the columns whose meaning erasure depends on (a profile page's ``asset_id``,
  a user's own files, an observer's student, ...).
- The analysts' read-only role (0007b grants it every table, now and later) is refused
  ``erased_users``: the list holds the erased people's ids, which nobody needs to read but the workers.

Nothing existing is rewritten: two new tables and comments, so an existing warehouse upgrades in
place at once. Independent of how history tables are stored (partitioning leaves these alone).

Revision ID: 0012
Revises: 0010
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from canvas_stream.settings import Settings
from processors.warehouse.schema import SCHEMA  # the configured schema (WAREHOUSE_SCHEMA)

revision: str = "0012"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIME = postgresql.TIMESTAMP(timezone=True)
JWT_BEFORE = "The compact JWS as received (re-verifiable while the platform key lives)."

# (table, column): (comment after, comment before)
COMMENTS: dict[tuple[str, str], tuple[str, str | None]] = {
    ("asset_accesses", "asset_id"): ("The asset; a user's id when asset_type is user (a profile page).", None),
    ("asset_accesses", "asset_name"): ("Name of the asset (a person's name for a profile page).", None),
    ("attachments", "context_id"): ("Canvas id of the owning context; a user's own files have context_type User.",
                                    None),
    ("enrollments", "associated_user_id"): ("The observed student, for an observer enrollment.", None),
    ("lti_notices", "jwt"): ("The compact JWS as received (re-verifiable while the platform key lives); NULL when "
                             "pseudonymizing or after erasing a person it names.", JWT_BEFORE),
    ("rubric_assessments", "artifact_id"): ("What was assessed: a submission's assessment goes with the erased "
                                            "submission.", None),
    ("submission_comments", "submission_id"): ("The submission commented on (comments on an erased person's work "
                                               "go with it).", None),
    ("submissions", "user_id"): ("The student.", None),
}


def _jsonb():
    return postgresql.JSONB(none_as_null=True, astext_type=sa.Text())


def upgrade() -> None:
    op.create_table(
        "erasures",
        sa.Column("id", sa.Text(), nullable=False, comment="Erasure request id (a UUID, printed by canvas-stream erase)."),
        sa.Column("requested_by", sa.Text(), nullable=False,
                  comment="Who asked for it (--requested-by: an officer, a ticket), never the person erased."),
        sa.Column("requested_at", TIME, server_default=sa.text("now()"), nullable=False,
                  comment="When the request was recorded."),
        sa.Column("completed_at", TIME, nullable=True,
                  comment="When every table was processed; NULL while running or if interrupted (run again)."),
        sa.Column("rows", _jsonb(), server_default=sa.text("'{}'::jsonb"), nullable=False,
                  comment="Per table: rows deleted and rows redacted."),
        sa.PrimaryKeyConstraint("id"),
        schema=SCHEMA,
        comment="Audit of erasure requests: who asked, when, how many rows; nothing about the person.",
    )
    op.create_table(
        "erased_users",
        sa.Column("erasure_id", sa.Text(), nullable=False, comment="The erasures row that added this person."),
        sa.Column("global_id", sa.BigInteger(), nullable=True,
                  comment="The person's Canvas user id in global form (shard * 10^13 + local id), when known."),
        sa.Column("local_id", sa.BigInteger(), nullable=False, comment="The person's Canvas user id in local form."),
        sa.Column("stored_ids", _jsonb(), server_default=sa.text("'[]'::jsonb"), nullable=False,
                  comment="The form(s) the warehouse's id columns hold the person's id in (CANVAS_HOME_SHARD)."),
        sa.Column("identifiers", _jsonb(), server_default=sa.text("'[]'::jsonb"), nullable=False,
                  comment="Opaque ids of the person (uuid, LTI user ids) that later events may carry instead."),
        sa.Column("identifier_hashes", _jsonb(), server_default=sa.text("'[]'::jsonb"), nullable=False,
                  comment="sha256 of the erasure id and the person's login, email, SIS id and names: recognises "
                          "them in later events that name the person by id, without keeping the values."),
        sa.Column("erased_at", TIME, server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("erasure_id"),
        schema=SCHEMA,
        comment="Suppression list of erased people (ids, opaque ids and salted hashes: no name, login or email), "
                "read by the workers.",
    )
    for (table, column), (comment, _) in COMMENTS.items():
        op.alter_column(table, column, comment=comment, schema=SCHEMA)
    bind = op.get_bind()
    role = Settings().analyst_role
    if bind.execute(sa.text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).first() is not None:
        bind.exec_driver_sql(f"REVOKE ALL ON {SCHEMA}.erased_users FROM {role}")


def downgrade() -> None:
    for (table, column), (_, before) in COMMENTS.items():
        op.alter_column(table, column, comment=before, schema=SCHEMA)
    op.drop_table("erased_users", schema=SCHEMA)
    op.drop_table("erasures", schema=SCHEMA)
