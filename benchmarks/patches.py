"""Prototypes of suggested changes to shared code, applied by ``benchmarks.wrap`` to measure them.

Nothing here is imported by the project; each function replaces one piece at runtime, keeping its
contract (same rows, same guards), so the benchmark can state a measured gain per suggestion.
"""

from __future__ import annotations

import json
from typing import Any


def fast_record_to_bytes() -> None:
    """Record.to_bytes without ``dataclasses.asdict`` (which deep-copies the whole payload)."""
    from canvas_stream import records

    def to_bytes(self: records.Record) -> bytes:
        v = self.verification
        obj = {"source": self.source, "format": self.format, "received_at": self.received_at,
               "payload": self.payload,
               "verification": {"signed": v.signed, "kid": v.kid, "issuer": v.issuer, "verified_at": v.verified_at},
               "raw": self.raw, "extra": self.extra, "v": self.v}
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()

    records.Record.to_bytes = to_bytes  # type: ignore[method-assign]


def executemany_writer() -> None:
    """The writer's statements compiled once per table and run as executemany (asyncpg prepares
    them once and pipelines the rows), instead of a multi-row VALUES statement compiled per batch."""
    from sqlalchemy.dialects.postgresql import insert

    from processors.warehouse import tables, writer

    templates: dict[str, Any] = {}

    def upsert_template(table: Any) -> Any:
        stmt = templates.get(table.name)
        if stmt is None:
            stmt = templates[table.name] = _template(table)
        return stmt

    def _template(table: Any) -> Any:
        from sqlalchemy import case, func, not_

        stmt = insert(table)
        excluded = stmt.excluded
        key_names = [c.name for c in table.primary_key.columns]
        data_columns = [c for c in table.c if c.name not in key_names and c.name not in tables.VERSION_COLUMNS]
        set_: dict[str, Any] = {
            c.name: case((getattr(func, tables.SCHEMA).newer(excluded.field_versions[c.name].astext,
                                            table.c.field_versions[c.name].astext), excluded[c.name]),
                         else_=table.c[c.name])
            for c in data_columns
        }
        set_["field_versions"] = getattr(func, tables.SCHEMA).merge_versions(table.c.field_versions,
                                                                             excluded.field_versions)
        set_["last_event_at"] = func.greatest(table.c.last_event_at, excluded.last_event_at)
        return stmt.on_conflict_do_update(index_elements=key_names, set_=set_,
                                          where=not_(table.c.field_versions.contains(excluded.field_versions)))

    async def upsert_changes(conn: Any, changes: Any) -> int:
        by_table: dict[str, list[dict[str, Any]]] = {}
        for row in writer.collapse(changes):
            table = writer._TABLES[row.table]
            values: dict[str, Any] = {c.name: None for c in table.c}
            values.update(row.key)
            values.update(row.fields)
            values["field_versions"] = row.versions
            values["last_event_at"] = writer._version_time(max(row.versions.values())) if row.versions else None
            by_table.setdefault(row.table, []).append(values)
        count = 0
        for name in sorted(by_table):
            table = writer._TABLES[name]
            rows = sorted(by_table[name], key=lambda r: tuple(str(r[c.name]) for c in table.primary_key.columns))
            await conn.execute(upsert_template(table), rows)
            count += len(rows)
        return count

    events_stmt: list[Any] = []

    async def insert_events(conn: Any, rows: Any) -> int:
        values = [
            {"event_id": r.event_id, "event_name": r.event_name, "format": r.format, "event_time": r.event_time,
             "received_at": r.received_at, "user_id": r.user_id, "context_type": r.context_type,
             "context_id": r.context_id, "payload": r.payload, "happening_id": r.happening_id or r.event_id}
            for r in sorted(writer.collapse_events(rows), key=lambda r: r.event_id)
        ]
        if not values:
            return 0
        if not events_stmt:
            stmt = insert(tables.events)
            events_stmt.append(stmt.on_conflict_do_update(
                index_elements=["event_id"], set_={"received_at": stmt.excluded.received_at},
                where=stmt.excluded.received_at < tables.events.c.received_at))
        await conn.execute(events_stmt[0], values)
        return len(values)

    writer.upsert_changes = upsert_changes  # type: ignore[assignment]
    writer.insert_events = insert_events  # type: ignore[assignment]
    import processors.sink as sink

    sink.upsert_changes = upsert_changes  # type: ignore[assignment]
    sink.insert_events = insert_events  # type: ignore[assignment]


def unnest_writer() -> None:
    """One ``INSERT .. SELECT FROM unnest($1::type[], ..) ON CONFLICT ..`` per table and batch: the
    same guards in hand-written SQL, one array parameter per column, so nothing is compiled per row
    and the statement text is constant (asyncpg prepares it once). JSON goes as text, cast in SQL."""
    from sqlalchemy.dialects import postgresql

    from processors.warehouse import tables, writer

    dialect = postgresql.dialect()
    sql_cache: dict[str, tuple[str, list[Any]]] = {}

    def q(name: str) -> str:
        return '"' + name.replace('"', '""') + '"'

    def array_type(column: Any) -> str:
        t = column.type.compile(dialect=dialect)
        return "text[]" if t in ("JSONB", "JSON") else f"{t}[]"

    def is_json(column: Any) -> bool:
        return column.type.compile(dialect=dialect) in ("JSONB", "JSON")

    def statement(table: Any) -> tuple[str, list[Any]]:
        cached = sql_cache.get(table.name)
        if cached:
            return cached
        cols = list(table.c)
        keys = [c.name for c in table.primary_key.columns]
        full = f"{q(tables.SCHEMA)}.{q(table.name)}"
        args = ", ".join(f"${i + 1}::{array_type(c)}" for i, c in enumerate(cols))
        select = ", ".join(f"u.{q(c.name)}::jsonb" if is_json(c) else f"u.{q(c.name)}" for c in cols)
        names = ", ".join(q(c.name) for c in cols)
        sets = []
        for c in cols:
            if c.name in keys or c.name in tables.VERSION_COLUMNS:
                continue
            n = q(c.name)
            sets.append(f"{n} = CASE WHEN {tables.SCHEMA}.newer(EXCLUDED.field_versions ->> '{c.name}', "
                        f"{full}.field_versions ->> '{c.name}') THEN EXCLUDED.{n} ELSE {full}.{n} END")
        sets.append(f"field_versions = {tables.SCHEMA}.merge_versions({full}.field_versions, EXCLUDED.field_versions)")
        sets.append(f"last_event_at = greatest({full}.last_event_at, EXCLUDED.last_event_at)")
        sql = (f"INSERT INTO {full} ({names}) SELECT {select} FROM unnest({args}) AS u({names}) "
               f"ON CONFLICT ({', '.join(q(k) for k in keys)}) DO UPDATE SET {', '.join(sets)} "
               f"WHERE NOT ({full}.field_versions @> EXCLUDED.field_versions)")
        sql_cache[table.name] = (sql, cols)
        return sql_cache[table.name]

    def dumps(value: Any) -> str:
        # SQLAlchemy's JSONB binds Python None as the JSON value null (not SQL NULL), also for columns the
        # event did not carry; do the same so the tables stay identical.
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)

    async def upsert_changes(conn: Any, changes: Any) -> int:
        by_table: dict[str, list[dict[str, Any]]] = {}
        for row in writer.collapse(changes):
            table = writer._TABLES[row.table]
            values: dict[str, Any] = dict(row.key)
            values.update(row.fields)
            values["field_versions"] = row.versions
            values["last_event_at"] = writer._version_time(max(row.versions.values())) if row.versions else None
            by_table.setdefault(row.table, []).append(values)
        count = 0
        for name in sorted(by_table):
            table = writer._TABLES[name]
            rows = sorted(by_table[name], key=lambda r: tuple(str(r.get(c.name)) for c in table.primary_key.columns))
            sql, cols = statement(table)
            arrays = [[dumps(r.get(c.name)) for r in rows] if is_json(c) else [r.get(c.name) for r in rows]
                      for c in cols]
            await conn.exec_driver_sql(sql, tuple(arrays))
            count += len(rows)
        return count

    events_sql = (
        f"INSERT INTO {tables.SCHEMA}.events (event_id, event_name, format, event_time, received_at, user_id, "
        "context_type, context_id, payload, happening_id) SELECT e.event_id, e.event_name, e.format, e.event_time, "
        "e.received_at, e.user_id, e.context_type, e.context_id, e.payload::jsonb, e.happening_id FROM unnest("
        "$1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[], $6::bigint[], $7::text[], "
        "$8::bigint[], $9::text[], $10::text[]) AS e(event_id, event_name, format, event_time, received_at, user_id, "
        "context_type, context_id, payload, happening_id) "
        "ON CONFLICT (event_id) DO UPDATE SET received_at = EXCLUDED.received_at "
        f"WHERE EXCLUDED.received_at < {tables.SCHEMA}.events.received_at")

    async def insert_events(conn: Any, rows: Any) -> int:
        rows = sorted(writer.collapse_events(rows), key=lambda r: r.event_id)
        if not rows:
            return 0
        await conn.exec_driver_sql(events_sql, (
            [r.event_id for r in rows], [r.event_name for r in rows], [r.format for r in rows],
            [r.event_time for r in rows], [r.received_at for r in rows], [r.user_id for r in rows],
            [r.context_type for r in rows], [r.context_id for r in rows],
            [json.dumps(r.payload, separators=(",", ":"), ensure_ascii=False) for r in rows],
            [r.happening_id or r.event_id for r in rows]))
        return len(rows)

    writer.upsert_changes = upsert_changes  # type: ignore[assignment]
    writer.insert_events = insert_events  # type: ignore[assignment]
    import processors.sink as sink

    sink.upsert_changes = upsert_changes  # type: ignore[assignment]
    sink.insert_events = insert_events  # type: ignore[assignment]
