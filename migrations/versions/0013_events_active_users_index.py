"""Active users per day from an index: ``events (event_name, event_time, user_id)``.

The analysts' "daily active users" queries (README, docs/analysts.md, the ``daily_active_users``
view) read every login and page view; with ``user_id`` in the index beside ``event_name`` and
``event_time`` they are index-only scans instead of sequential scans of ``events`` and its payloads
(``benchmarks/queries.py`` at 3M events: 16k buffers read instead of 750k, docs/performance.md).
The new index replaces ``events_name_time_idx``, whose two columns are its prefix, so the writer
maintains as many indexes as before.

Upgrades in place without blocking the workers: both steps run ``CONCURRENTLY`` (outside a
transaction), the new index first, so queries always have one; a build interrupted earlier (an
invalid index) is dropped and built again.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from processors.warehouse.schema import SCHEMA

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NEW = ("events_name_time_user_idx", ["event_name", "event_time", "user_id"])
OLD = ("events_name_time_idx", ["event_name", "event_time"])


def _replace(build: tuple[str, list[str]], drop: tuple[str, list[str]]) -> None:
    with op.get_context().autocommit_block():
        bind = op.get_bind()
        valid = bind.execute(sa.text("SELECT i.indisvalid FROM pg_index i WHERE i.indexrelid = to_regclass(:name)"),
                             {"name": f"{SCHEMA}.{build[0]}"}).scalar()
        if valid is False:  # left by an interrupted CREATE INDEX CONCURRENTLY
            op.drop_index(build[0], table_name="events", schema=SCHEMA, postgresql_concurrently=True)
        op.create_index(build[0], "events", build[1], unique=False, schema=SCHEMA, postgresql_concurrently=True,
                        if_not_exists=True)
        op.drop_index(drop[0], table_name="events", schema=SCHEMA, postgresql_concurrently=True, if_exists=True)


def upgrade() -> None:
    _replace(NEW, OLD)


def downgrade() -> None:
    _replace(OLD, NEW)
