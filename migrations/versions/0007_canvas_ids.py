"""One id per Canvas object: every stored id in Canvas Data 2's form, rows of one object merged.

Releases before this one stored each id in whatever form the event carried (global
``shard * 10^13 + local`` or local), so one object could have two rows. This revision creates the
SQL mirror of ``processors/normalize/ids.py`` (``id_shard``, ``event_shard``, ``canonical_id``), then
converts every id column of every table and merges the rows that turn out to be one object, by the
writer's rule (per column, the value of the newest version in ``field_versions`` wins).

Which shard an id belongs to is decided as the worker decides it for the event that wrote it: for a
data column, the event named by its version in ``field_versions``; for a row's key, the event of
the row's newest version (a fact row's own event). The home shard is the ``CANVAS_HOME_SHARD``
setting, read here; unset, each of those events' own shard counts as home, exactly as in the
worker, so ``canvas-stream replay`` afterwards gives the same tables. Not reversible: a downgrade
keeps the converted ids and drops only the functions.

Revision ID: 0007
Revises: 0006
Create Date: 2027-01-10
"""

import time
from collections.abc import Sequence

import structlog
from alembic import op
from sqlalchemy import text

from canvas_stream.settings import Settings
from processors.warehouse.schema import SCHEMA, TABLE_SPECS, Kind

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = structlog.get_logger("migrations.0007")

S = SCHEMA
FACTOR = "10000000000000"  # 10^13: global id = shard * 10^13 + local id
LIMIT = "9223370000000000000"  # (922336 + 1) * 10^13: shards whose local ids all fit a bigint
EXT = "'com.instructure.canvas'"

FUNCTIONS = (
    f"""
CREATE OR REPLACE FUNCTION {S}.id_shard(value jsonb) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE WHEN t ~ '^[0-9]{{1,19}}$' THEN
           CASE WHEN t::numeric >= {FACTOR} AND t::numeric < {LIMIT} THEN div(t::numeric, {FACTOR})::bigint END
         END
  FROM (SELECT CASE jsonb_typeof(value) WHEN 'string' THEN regexp_replace(value #>> '{{}}', '^.*:', '')
                                        WHEN 'number' THEN value #>> '{{}}' END AS t) v
$$""",
    f"COMMENT ON FUNCTION {S}.id_shard(jsonb) IS "
    "'The shard of a global-form Canvas id (number, digit string or URN); NULL for anything else.'",
    f"""
CREATE OR REPLACE FUNCTION {S}.event_shard(format text, payload jsonb) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE format
    WHEN 'canvas' THEN coalesce({S}.id_shard(payload -> 'metadata' -> 'root_account_id'),
                                {S}.id_shard(payload -> 'metadata' -> 'context_account_id'),
                                {S}.id_shard(payload -> 'metadata' -> 'context_id'))
    WHEN 'caliper' THEN coalesce(
      {S}.id_shard(payload -> 'data' -> 0 -> 'actor' -> 'extensions' -> {EXT} -> 'root_account_id'),
      {S}.id_shard(payload -> 'data' -> 0 -> 'object' -> 'extensions' -> {EXT} -> 'context_account_id'),
      {S}.id_shard(payload -> 'data' -> 0 -> 'group' -> 'id'),
      {S}.id_shard(payload -> 'data' -> 0 -> 'object' -> 'id'))
  END
$$""",
    f"COMMENT ON FUNCTION {S}.event_shard(text, jsonb) IS "
    "'The Canvas shard of a stored event (its root account''s), as the worker reads it; NULL when it names none.'",
    f"""
CREATE OR REPLACE FUNCTION {S}.canonical_id(id bigint, event_shard bigint, home_shard bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE
    WHEN id IS NULL THEN NULL
    WHEN id < {FACTOR} THEN
      CASE WHEN id > 0 AND event_shard IS NOT NULL AND event_shard <> coalesce(home_shard, event_shard)
           THEN event_shard * {FACTOR} + id ELSE id END
    WHEN id / {FACTOR} = coalesce(home_shard, event_shard) THEN id % {FACTOR}
    ELSE id
  END
$$""",
    f"COMMENT ON FUNCTION {S}.canonical_id(bigint, bigint, bigint) IS "
    "'The stored (Canvas Data 2) form of an id carried by an event of event_shard, given the home shard.'",
)


def _columns(bind, table: str) -> list[str]:
    return list(bind.execute(text(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = :s AND table_name = :t "
        "ORDER BY ordinal_position"), {"s": S, "t": table}).scalars())


def _primary_key(bind, table: str) -> list[str]:
    """The table's key as it is in the database now (later migrations may re-key a table: 0010 keys
    the fact tables by happening_id, so the declarations in schema.py are not what this revision sees)."""
    return list(bind.execute(text(
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
        "WHERE i.indrelid = CAST(:t AS regclass) AND i.indisprimary ORDER BY array_position(i.indkey, a.attnum)"),
        {"t": f"{S}.{table}"}).scalars())


def _event_of(version: str) -> str:
    return f"substr({version}, strpos({version}, '|') + 1)"


# The version of the row's newest change (byte order is (time, event id) order). Its output keeps the
# default collation, so joining its event id to _cs_event_shards can use that table's key.
NEWEST_VERSION = "(SELECT f.v FROM jsonb_each_text(t0.field_versions) AS f(k, v) ORDER BY f.v COLLATE \"C\" DESC LIMIT 1)"


def _convert_table(bind, table: str, home: str) -> None:
    """Convert one table's ids: data columns in place, then the rows whose key changes are moved.

    Each id column joins _cs_event_shards on the event that set it (by key for a fact row, by its
    version in field_versions otherwise), so canonical_id gets plain values and is inlined.
    """
    started = time.monotonic()
    spec = TABLE_SPECS[table]
    present = _columns(bind, table)
    keys = _primary_key(bind, table)
    id_keys = [c for c in keys if spec.kinds.get(c) is Kind.ID]
    id_data = [c for c in present if c not in keys and spec.kinds.get(c) is Kind.ID]
    fact = keys == ["event_id"]
    match = " AND ".join(f"t.{c} = n.{c}" for c in keys)

    updated = 0
    if id_data:
        if fact:
            joins = "LEFT JOIN _cs_event_shards x ON x.event_id = t0.event_id"
            shard = dict.fromkeys(id_data, "x.shard")
        else:
            joins = " ".join(f"LEFT JOIN _cs_event_shards x{i} ON x{i}.event_id = "
                             f"{_event_of(f'(t0.field_versions ->> {chr(39)}{c}{chr(39)})')}"
                             for i, c in enumerate(id_data))
            shard = {c: f"x{i}.shard" for i, c in enumerate(id_data)}
        converted = ", ".join(f"{S}.canonical_id(t0.{c}, {shard[c]}, {home}) AS {c}" for c in id_data)
        updated = bind.exec_driver_sql(
            f"UPDATE {S}.{table} AS t SET {', '.join(f'{c} = n.{c}' for c in id_data)} "
            f"FROM (SELECT {', '.join(f't0.{c}' for c in keys)}, {converted} FROM {S}.{table} t0 {joins}) n "
            f"WHERE {match} AND ({', '.join(f't.{c}' for c in id_data)}, NULL) IS DISTINCT FROM "
            f"({', '.join(f'n.{c}' for c in id_data)}, NULL)").rowcount

    moved = merged = 0
    if id_keys:
        canonical = ", ".join(f"{S}.canonical_id(t.{c}, x.shard, {home}) AS _cs_{c}" if c in id_keys
                              else f"t.{c} AS _cs_{c}" for c in keys)
        bind.exec_driver_sql(
            f"CREATE TEMP TABLE _cs_moved ON COMMIT DROP AS SELECT * FROM ("
            f"SELECT t.*, {canonical} FROM (SELECT t0.*, {NEWEST_VERSION} AS _cs_newest FROM {S}.{table} t0) t "
            f"LEFT JOIN _cs_event_shards x ON x.event_id = {_event_of('t._cs_newest')}) m "
            f"WHERE ({', '.join(keys)}, NULL) IS DISTINCT FROM ({', '.join(f'_cs_{c}' for c in keys)}, NULL)")
        moved = bind.exec_driver_sql("SELECT count(*) FROM _cs_moved").scalar_one()
        if moved:
            before = bind.exec_driver_sql(f"SELECT count(*) FROM {S}.{table}").scalar_one()
            bind.exec_driver_sql(
                f"DELETE FROM {S}.{table} t USING _cs_moved n WHERE {match}")
            data = [c for c in present if c not in keys and c not in ("last_event_at", "field_versions")]
            assign = [f"{c} = CASE WHEN {S}.newer(excluded.field_versions ->> '{c}', t.field_versions ->> '{c}') "
                      f"THEN excluded.{c} ELSE t.{c} END" for c in data]
            assign += [f"field_versions = {S}.merge_versions(t.field_versions, excluded.field_versions)",
                       "last_event_at = greatest(t.last_event_at, excluded.last_event_at)"]
            columns = [*keys, *data, "last_event_at", "field_versions"]
            values = [*(f"_cs_{c}" for c in keys), *data, "last_event_at", "field_versions"]
            ranks = bind.exec_driver_sql(
                f"SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM _cs_moved "
                f"GROUP BY {', '.join(f'_cs_{c}' for c in keys)}) g").scalar_one()
            # Rows that become one object are upserted one at a time per key (a statement may not
            # touch a row twice), each by the writer's rule: the result does not depend on the order.
            for rank in range(1, ranks + 1):
                bind.exec_driver_sql(
                    f"INSERT INTO {S}.{table} AS t ({', '.join(columns)}) "
                    f"SELECT {', '.join(values)} FROM (SELECT m.*, row_number() OVER (PARTITION BY "
                    f"{', '.join(f'_cs_{c}' for c in keys)} ORDER BY {', '.join(keys)}) AS _cs_rank "
                    f"FROM _cs_moved m) r WHERE _cs_rank = {rank} "
                    f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {', '.join(assign)} "
                    f"WHERE NOT t.field_versions @> excluded.field_versions")
            merged = before - bind.exec_driver_sql(f"SELECT count(*) FROM {S}.{table}").scalar_one()
        bind.exec_driver_sql("DROP TABLE _cs_moved")
    if updated or moved:
        log.info("ids converted", table=table, rows_updated=updated, keys_changed=moved, rows_merged=merged,
                 seconds=round(time.monotonic() - started, 1))


def upgrade() -> None:
    bind = op.get_bind()
    home_shard = Settings().canvas_home_shard  # read now, from the environment of `canvas-stream migrate`
    home = "NULL::bigint" if home_shard is None else str(int(home_shard))
    log.info("converting ids to Canvas Data 2's form",
             canvas_home_shard=home_shard if home_shard is not None else "unset: each event's own shard")
    for statement in FUNCTIONS:
        op.execute(statement)
    started = time.monotonic()
    # Every stored event's shard, read once (NULL: it names none).
    bind.exec_driver_sql(
        f"CREATE TEMP TABLE _cs_event_shards ON COMMIT DROP AS "
        f"SELECT event_id, {S}.event_shard(format, payload) AS shard FROM {S}.events")
    bind.exec_driver_sql("ALTER TABLE _cs_event_shards ADD PRIMARY KEY (event_id)")
    bind.exec_driver_sql("ANALYZE _cs_event_shards")
    log.info("event shards read", seconds=round(time.monotonic() - started, 1))
    started = time.monotonic()
    user_id = f"{S}.canonical_id(e.user_id, x.shard, {home})"
    context_id = f"{S}.canonical_id(e.context_id, x.shard, {home})"
    updated = bind.exec_driver_sql(
        f"UPDATE {S}.events t SET user_id = n.user_id, context_id = n.context_id "
        f"FROM (SELECT e.event_id, {user_id} AS user_id, {context_id} AS context_id "
        f"FROM {S}.events e JOIN _cs_event_shards x ON x.event_id = e.event_id) n "
        f"WHERE t.event_id = n.event_id AND (t.user_id, t.context_id) IS DISTINCT FROM (n.user_id, n.context_id)"
    ).rowcount
    log.info("ids converted", table="events", rows_updated=updated, seconds=round(time.monotonic() - started, 1))
    for table, spec in sorted(TABLE_SPECS.items()):
        if spec.versioned and any(c.kind is Kind.ID for c in spec.all_columns()) and _columns(bind, table):
            _convert_table(bind, table, home)
    bind.exec_driver_sql("DROP TABLE _cs_event_shards")
    _rename_comments(bind)


def _rename_comments(bind) -> None:
    """Column comments no longer promise global ids, nor name the old schema."""
    rows = bind.execute(text(
        "SELECT c.relname, a.attname, d.description FROM pg_description d "
        "JOIN pg_class c ON c.oid = d.objoid AND d.classoid = 'pg_class'::regclass "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = d.objsubid "
        "WHERE n.nspname = :s AND d.objsubid > 0 "
        "AND (d.description LIKE '%Canvas global %' OR d.description LIKE '%(canvas.events.event_id)%')"),
        {"s": S}).all()
    for table, column, comment in rows:
        new = comment.replace("Canvas global ", "Canvas ").replace("(canvas.events.event_id)", "(events.event_id)")
        quoted = new.replace("'", "''")
        bind.exec_driver_sql(f"COMMENT ON COLUMN {S}.{table}.{column} IS '{quoted}'")


def downgrade() -> None:
    op.execute(f"DROP FUNCTION IF EXISTS {S}.canonical_id(bigint, bigint, bigint)")
    op.execute(f"DROP FUNCTION IF EXISTS {S}.event_shard(text, jsonb)")
    op.execute(f"DROP FUNCTION IF EXISTS {S}.id_shard(jsonb)")
