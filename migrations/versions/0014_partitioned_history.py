"""History partitioned by month: ``events`` and the fact tables become range-partitioned on event_time;
``retention_runs`` records retention.

PostgreSQL requires the partition key in every unique key, so the keys change:

- ``events``: ``(event_id, event_time)``. ``event_time`` is the event's own time, never the receipt
  time, so a redelivery (months later even) has the key of the first delivery; undated events are
  filed at the epoch (``model.history_time``).
- fact tables: ``(happening_id, event_time)``, where ``event_time`` becomes the happening's time to
  the second (``model.happening_time``). A happening id is derived from the second of the event, and
  the Canvas and the Caliper delivery of one happening may differ below it: truncated, both
  deliveries (and every redelivery) have one key, so a happening stays one fact row. Stored fact
  rows are truncated the same way (the happening id is already unique, so no two rows meet), and
  ``event_time`` leaves their ``field_versions`` (it is a key now, not a versioned column).

Each history table is rebuilt in place (``migrations/rebuild.py``): renamed aside, recreated
``PARTITION BY RANGE (event_time)`` with the same columns (whatever earlier migrations added),
comments, defaults, indexes, owner and grants; its rows copied; the old table dropped. Views that
depend on these tables (the analyst views, dbt's views in any schema) are dropped and recreated
around it. Partitions: ``<table>_before`` (MINVALUE up to the first month: undated and very old
rows), one per month from the oldest month with data (at most ``OLDEST_MONTHS`` back) to
``AHEAD_MONTHS`` ahead, and one for each later month that already holds rows. No default partition
(docs/retention.md). The downgrade rebuilds plain tables (undated rows back to NULL; fact times stay
truncated to the second).

Runs after 0013 (which builds an index ``CONCURRENTLY``: PostgreSQL cannot do that on a partitioned
table; the rebuild here carries 0013's index over like every other).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection

from migrations import rebuild
from migrations.rebuild import ddl, literal, qualified, quote
from processors.warehouse.partitions import Month, before_name, create_partition_sql, months_between, partition_name
from processors.warehouse.schema import SCHEMA

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EPOCH = "CAST('1970-01-01 00:00:00+00' AS timestamptz)"
AHEAD_MONTHS = 3
OLDEST_MONTHS = 120
EVENTS_TIME = ("When the event happened (metadata.event_time / eventTime; an LTI notice's timestamp); 1970-01-01 "
               "when the event carries no time. Part of the key: the partition key (monthly partitions).")
FACT_TIME = ("When the happening happened, to the second (its Canvas and Caliper deliveries may differ below it; "
             "events.event_time has the delivery's precision); 1970-01-01 when the event carries no time. Part of "
             "the key: the partition key (monthly partitions).")
OLD_EVENT_TIME = "When the event happened (metadata.event_time / eventTime)."
# The analyst view that skipped undated events (NULL before, the epoch now): it still skips them.
DAILY_ACTIVE_USERS = """
        SELECT (event_time AT TIME ZONE 'UTC')::date AS day, count(DISTINCT user_id) AS active_users
        FROM {schema}.events
        WHERE event_name IN ('logged_in', 'asset_accessed') AND user_id IS NOT NULL AND {dated}
        GROUP BY 1
        """
DATED = {"upgrade": f"event_time > {EPOCH}", "downgrade": "event_time IS NOT NULL"}


def _key(table: str) -> tuple[str, str]:
    return ("event_id" if table == "events" else "happening_id", "event_time")


def _history(bind: Connection, kind: str) -> list[str]:
    """The history tables, read from the database (so later schema changes cannot alter this revision):
    to partition ('r'), ``events`` and the fact tables (keyed by happening_id since 0010); to make plain
    again ('p'), every partitioned table of the schema."""
    found = rebuild.rows(bind, """
        SELECT c.relname, array_agg(a.attname::text ORDER BY a.attnum) FILTER (WHERE i.indisprimary)
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary
        LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY(i.indkey)
        WHERE n.nspname = :s AND CAST(c.relkind AS text) = :kind AND NOT c.relispartition
        GROUP BY c.relname ORDER BY c.relname""", s=SCHEMA, kind=kind)
    if kind == "p":
        return [name for name, _ in found]
    return [name for name, key in found if name == "events" or key == ["happening_id"]]


def _months(bind: Connection, old: str, now: datetime) -> tuple[Month, list[Month]]:
    """The first month (where ``_before`` ends) and every month to create."""
    current = Month.of(now)
    first = rebuild.rows(bind, f"SELECT min(event_time) FROM {qualified(old, SCHEMA)} WHERE event_time > {EPOCH}")[0][0]
    floor = current if first is None else min(Month.of(first), current)
    floor = max(floor, current.add(-OLDEST_MONTHS))
    months = months_between(floor, current.add(AHEAD_MONTHS))
    later = rebuild.rows(bind, f"""
        SELECT DISTINCT CAST(extract(year FROM event_time) AS int), CAST(extract(month FROM event_time) AS int)
        FROM {qualified(old, SCHEMA)} WHERE event_time >= CAST({months[-1].add(1).literal()} AS timestamptz)""")
    return floor, months + sorted(Month(y, m) for y, m in later)


def _to_partitioned(bind: Connection, table: str, now: datetime) -> None:
    state = rebuild.table_state(bind, SCHEMA, table)
    for name, definition, unique, primary, _ in state.indexes:
        if unique and not primary and "event_time" not in definition:
            raise RuntimeError(f"unique index {name} on {table} lacks event_time: a partitioned table's unique keys "
                               "must include the partition key; add event_time to it first")
    old = rebuild.rename_aside(bind, SCHEMA, table, state, "__unpartitioned")
    target = qualified(table, SCHEMA)
    ddl(bind, f"CREATE TABLE {target} (LIKE {qualified(old, SCHEMA)} INCLUDING DEFAULTS INCLUDING COMMENTS "
              "INCLUDING CONSTRAINTS INCLUDING STORAGE INCLUDING COMPRESSION) PARTITION BY RANGE (event_time)")
    ddl(bind, f"ALTER TABLE {target} ALTER COLUMN event_time SET NOT NULL")
    ddl(bind, f"COMMENT ON COLUMN {target}.event_time IS {literal(EVENTS_TIME if table == 'events' else FACT_TIME)}")
    floor, months = _months(bind, old, now)
    partitions = [(before_name(table), None, floor)] + [(partition_name(table, m), m, m.add(1)) for m in months]
    for name, lower, upper in partitions:
        for statement in create_partition_sql(table, name, lower, upper):
            ddl(bind, statement)
    time = f"coalesce(event_time, {EPOCH})"
    if table != "events":  # the happening's second; event_time is a key now, not a versioned column
        time = f"date_trunc('second', {time})"
    select = ", ".join(time if c == "event_time" else "field_versions - 'event_time'" if c == "field_versions"
                       else quote(c) for c in state.columns)
    ddl(bind, f"INSERT INTO {target} ({', '.join(quote(c) for c in state.columns)}) "
              f"SELECT {select} FROM {qualified(old, SCHEMA)}")
    ddl(bind, f"ALTER TABLE {target} ADD CONSTRAINT {quote(table + '_pkey')} "
              f"PRIMARY KEY ({', '.join(_key(table))})")
    ddl(bind, f"DROP TABLE {qualified(old, SCHEMA)}")
    rebuild.restore(bind, SCHEMA, table, state)
    ddl(bind, f"ANALYZE {target}")  # autovacuum never analyzes a partitioned parent


def _to_plain(bind: Connection, table: str) -> None:
    """Downgrade: one plain table keyed by the id alone again (the earliest row of an id wins)."""
    state = rebuild.table_state(bind, SCHEMA, table)
    old = rebuild.rename_aside(bind, SCHEMA, table, state, "__partitioned")
    target = qualified(table, SCHEMA)
    ddl(bind, f"CREATE TABLE {target} (LIKE {qualified(old, SCHEMA)} INCLUDING DEFAULTS INCLUDING COMMENTS "
              "INCLUDING CONSTRAINTS INCLUDING STORAGE INCLUDING COMPRESSION)")
    ddl(bind, f"ALTER TABLE {target} ALTER COLUMN event_time DROP NOT NULL")
    old_comment = "NULL" if table == "grade_changes" else literal(OLD_EVENT_TIME)  # as 0002 made them
    ddl(bind, f"COMMENT ON COLUMN {target}.event_time IS {old_comment}")
    key = _key(table)[0]
    select = ", ".join(f"nullif(event_time, {EPOCH})" if c == "event_time" else quote(c) for c in state.columns)
    ddl(bind, f"INSERT INTO {target} ({', '.join(quote(c) for c in state.columns)}) "
              f"SELECT DISTINCT ON ({key}) {select} FROM {qualified(old, SCHEMA)} ORDER BY {key}, event_time")
    ddl(bind, f"ALTER TABLE {target} ADD CONSTRAINT {quote(table + '_pkey')} PRIMARY KEY ({key})")
    ddl(bind, f"DROP TABLE {qualified(old, SCHEMA)}")  # and its partitions
    rebuild.restore(bind, SCHEMA, table, state)


def _rebuild_all(kind: str, convert, direction: str) -> None:
    bind = op.get_bind()
    ddl(bind, "SET LOCAL TimeZone = 'UTC'")  # month bounds, extract() and date_trunc() in UTC
    todo = _history(bind, kind)
    views = rebuild.dependent_views(bind, SCHEMA, todo) if todo else []
    rebuild.drop_views(bind, views)
    for table in todo:
        convert(bind, table)
    rebuild.create_views(bind, views)
    if rebuild.relkind(bind, SCHEMA, "daily_active_users") == "v":
        query = DAILY_ACTIVE_USERS.format(schema=SCHEMA, dated=DATED[direction])
        ddl(bind, f"CREATE OR REPLACE VIEW {qualified('daily_active_users', SCHEMA)} AS {query}")


def upgrade() -> None:
    now = datetime.now(UTC)
    _rebuild_all("r", lambda bind, table: _to_partitioned(bind, table, now), "upgrade")
    op.create_table(
        "retention_runs",
        sa.Column("id", sa.Text(), nullable=False, comment="Run id (a UUID)."),
        sa.Column("started_at", postgresql.TIMESTAMP(timezone=True), server_default=sa.text("now()"), nullable=False,
                  comment="When the run started."),
        sa.Column("finished_at", postgresql.TIMESTAMP(timezone=True), nullable=True, comment="When it finished."),
        sa.Column("trigger", sa.Text(), nullable=True, comment="cli, or scheduled (and which host ran it)."),
        sa.Column("actions", postgresql.JSONB(none_as_null=True), server_default=sa.text("'[]'::jsonb"),
                  nullable=False, comment="What went: partitions dropped (estimated rows), rows pruned, per table."),
        sa.PrimaryKeyConstraint("id"),
        schema=SCHEMA,
        comment="Every retention run that changed something, and every scheduled run: the evidence that retention "
                "is applied (docs/retention.md). Never expires.",
    )


def downgrade() -> None:
    op.drop_table("retention_runs", schema=SCHEMA)
    _rebuild_all("p", _to_plain, "downgrade")
