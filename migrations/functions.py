"""SQL text of the warehouse's version-guard functions, for a given schema.

Shared by migration 0001 (which creates them) and by ``relocate`` (which re-creates
``merge_versions`` after a move: an SQL function body names the functions it calls by
schema-qualified name, and that text does not follow the function into another schema).
"""

from __future__ import annotations


# Versions are "<event time, microseconds, UTC>Z|<event id>": byte order (COLLATE "C") is
# (time, id) order, so comparisons are deterministic whatever the database's collation.
def newer(schema: str) -> str:
    return f"""
CREATE OR REPLACE FUNCTION {schema}.newer(candidate text, current text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT candidate IS NOT NULL AND (current IS NULL OR candidate COLLATE "C" > current COLLATE "C")
$$;
"""


def merge_versions(schema: str) -> str:
    return f"""
CREATE OR REPLACE FUNCTION {schema}.merge_versions(stored jsonb, incoming jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT coalesce(jsonb_object_agg(k, CASE WHEN {schema}.newer(b, a) THEN b ELSE a END), '{{}}'::jsonb)
  FROM (
    SELECT coalesce(s.key, i.key) AS k, s.value #>> '{{}}' AS a, i.value #>> '{{}}' AS b
    FROM jsonb_each(coalesce(stored, '{{}}'::jsonb)) s
    FULL JOIN jsonb_each(coalesce(incoming, '{{}}'::jsonb)) i ON s.key = i.key
  ) pairs
$$;
"""
