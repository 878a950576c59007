"""ingress_answers (Canvas's deactivation budget, all replicas) and an index on events.received_at

The index is built CONCURRENTLY outside the migration's transaction, so upgrading a large
warehouse in place does not block the workers' inserts while it builds.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from processors.warehouse.schema import SCHEMA  # the configured schema (WAREHOUSE_SCHEMA)
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ingress_answers",
        sa.Column("minute", postgresql.TIMESTAMP(timezone=True), nullable=False,
                  comment="Start of the minute the answers were given in."),
        sa.Column("route", sa.Text(), nullable=False, comment="Route template, e.g. /live-events."),
        sa.Column("replica", sa.Text(), nullable=False,
                  comment="Ingress process that answered: host:pid:start time."),
        sa.Column("code", sa.BigInteger(), autoincrement=False, nullable=False,
                  comment="HTTP status code of the answers."),
        sa.Column("answers", sa.BigInteger(), nullable=False, comment="Answers with this code in this minute."),
        sa.Column("slow", sa.BigInteger(), nullable=False,
                  comment="How many of them took 15 s or more (Canvas: a timeout)."),
        sa.PrimaryKeyConstraint("minute", "route", "replica", "code"),
        schema=SCHEMA,
        comment="Ingress answers to Canvas per minute, route, replica and status: the source of the 24-hour "
                "deactivation budget (operational; not event data).",
    )
    op.create_index("ingress_answers_minute_idx", "ingress_answers", ["minute"], unique=False, schema=SCHEMA)
    with op.get_context().autocommit_block():
        op.create_index("events_received_at_idx", "events", ["received_at"], unique=False, schema=SCHEMA,
                        postgresql_concurrently=True, if_not_exists=True)


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index("events_received_at_idx", table_name="events", schema=SCHEMA,
                      postgresql_concurrently=True, if_exists=True)
    op.drop_index("ingress_answers_minute_idx", table_name="ingress_answers", schema=SCHEMA)
    op.drop_table("ingress_answers", schema=SCHEMA)
