"""Schema canvas and the version-guard functions the writer's upserts use.

Revision ID: 0001
Revises:
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Versions are "<event time, microseconds, UTC>Z|<event id>": byte order (COLLATE "C") is
# (time, id) order, so comparisons are deterministic whatever the database's collation.
NEWER = """
CREATE OR REPLACE FUNCTION canvas.newer(candidate text, current text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT candidate IS NOT NULL AND (current IS NULL OR candidate COLLATE "C" > current COLLATE "C")
$$;
"""

MERGE_VERSIONS = """
CREATE OR REPLACE FUNCTION canvas.merge_versions(stored jsonb, incoming jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT coalesce(jsonb_object_agg(k, CASE WHEN canvas.newer(b, a) THEN b ELSE a END), '{}'::jsonb)
  FROM (
    SELECT coalesce(s.key, i.key) AS k, s.value #>> '{}' AS a, i.value #>> '{}' AS b
    FROM jsonb_each(coalesce(stored, '{}'::jsonb)) s
    FULL JOIN jsonb_each(coalesce(incoming, '{}'::jsonb)) i ON s.key = i.key
  ) pairs
$$;
"""


def upgrade() -> None:
    op.execute("CREATE SCHEMA IF NOT EXISTS canvas")
    op.execute(NEWER)
    op.execute(MERGE_VERSIONS)


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS canvas.merge_versions(jsonb, jsonb)")
    op.execute("DROP FUNCTION IF EXISTS canvas.newer(text, text)")
