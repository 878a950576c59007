"""The warehouse schema and the version-guard functions the writer's upserts use.

Created in the configured schema (``WAREHOUSE_SCHEMA``, ``processors.warehouse.schema.SCHEMA``).
Releases before 0007 ran this with the schema fixed to ``canvas``; migrations/env.py moves such a
warehouse into the configured schema before it runs anything.

Revision ID: 0001
Revises:
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from alembic import op

from migrations import functions
from processors.warehouse.schema import SCHEMA

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
    op.execute(functions.newer(SCHEMA))
    op.execute(functions.merge_versions(SCHEMA))


def downgrade() -> None:
    op.execute(f"DROP FUNCTION IF EXISTS {SCHEMA}.merge_versions(jsonb, jsonb)")
    op.execute(f"DROP FUNCTION IF EXISTS {SCHEMA}.newer(text, text)")
