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
            c.name: case((func.canvas.newer(excluded.field_versions[c.name].astext,
                                            table.c.field_versions[c.name].astext), excluded[c.name]),
                         else_=table.c[c.name])
            for c in data_columns
        }
        set_["field_versions"] = func.canvas.merge_versions(table.c.field_versions, excluded.field_versions)
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
             "context_id": r.context_id, "payload": r.payload}
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
