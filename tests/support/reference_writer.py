"""The warehouse writer as it was before the ``unnest`` writer: an oracle for tests and the benchmark.

Kept as it was (SQLAlchemy statements run as executemany, JSON encoded by SQLAlchemy's JSONB type,
the in-batch merge written out again here) so that ``processors.warehouse.writer`` can be checked
against an independent implementation of the same rule: same input, byte-identical tables.
Not used by the system itself.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Table, case, func, not_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from processors.normalize.model import EventRow, RowChange
from processors.warehouse import tables

_TABLES: dict[str, Table] = {t.name: t for t in tables.warehouse_tables()}
_EMPTY_ROWS: dict[str, dict[str, None]] = {name: dict.fromkeys(t.c.keys()) for name, t in _TABLES.items()}


def collapse(changes: Iterable[RowChange]) -> list[tuple[str, dict[str, Any], dict[str, Any], dict[str, str]]]:
    """(table, key, fields, versions) per row: per column, the value of the latest version wins."""
    merged: dict[tuple[str, tuple[Any, ...]], tuple[str, dict[str, Any], dict[str, Any], dict[str, str]]] = {}
    for change in changes:
        index = (change.table, tuple(sorted(change.key.items())))
        row = merged.setdefault(index, (change.table, dict(change.key), {}, {}))
        for column, value in change.fields.items():
            current = row[3].get(column)
            if current is None or change.version > current:
                row[2][column] = value
                row[3][column] = change.version
    return list(merged.values())


def _version_time(version: str) -> datetime:
    return datetime.fromisoformat(version.split("|", 1)[0].replace("Z", "+00:00"))


@functools.cache
def _upsert_statement(table: Table) -> Any:
    stmt = insert(table)
    excluded = stmt.excluded
    functions = getattr(func, table.schema)  # newer() and merge_versions() live beside the tables
    key_names = [c.name for c in table.primary_key.columns]
    data_columns = [c for c in table.c if c.name not in key_names and c.name not in tables.VERSION_COLUMNS]
    set_: dict[str, Any] = {
        c.name: case(
            (functions.newer(excluded.field_versions[c.name].astext, table.c.field_versions[c.name].astext),
             excluded[c.name]),
            else_=table.c[c.name],
        )
        for c in data_columns
    }
    set_["field_versions"] = functions.merge_versions(table.c.field_versions, excluded.field_versions)
    set_["last_event_at"] = func.greatest(table.c.last_event_at, excluded.last_event_at)
    return stmt.on_conflict_do_update(index_elements=key_names, set_=set_,
                                      where=not_(table.c.field_versions.contains(excluded.field_versions)))


@functools.cache
def _events_statement() -> Any:
    stmt = insert(tables.events)
    return stmt.on_conflict_do_update(
        index_elements=[c.name for c in tables.events.primary_key.columns],  # (event_id, event_time)
        set_={"received_at": stmt.excluded.received_at,
              "subscription": func.coalesce(stmt.excluded.subscription, tables.events.c.subscription),
              "arrival": func.coalesce(stmt.excluded.arrival, tables.events.c.arrival)},
        where=stmt.excluded.received_at < tables.events.c.received_at)


async def upsert_changes(conn: AsyncConnection, changes: Iterable[RowChange]) -> int:
    by_table: dict[str, list[dict[str, Any]]] = {}
    for table_name, key, fields, versions in collapse(changes):
        values: dict[str, Any] = _EMPTY_ROWS[table_name].copy()
        values.update(key)
        values.update(fields)
        values["field_versions"] = versions
        values["last_event_at"] = _version_time(max(versions.values())) if versions else None
        by_table.setdefault(table_name, []).append(values)
    for name in sorted(by_table):
        table = _TABLES[name]
        rows = sorted(by_table[name], key=lambda r: tuple(str(r[c.name]) for c in table.primary_key.columns))
        await conn.execute(_upsert_statement(table), rows)
    return sum(len(rows) for rows in by_table.values())


async def insert_events(conn: AsyncConnection, rows: Iterable[EventRow]) -> int:
    best: dict[str, EventRow] = {}
    for row in rows:
        seen = best.get(row.event_id)
        if seen is None or row.received_at < seen.received_at:
            best[row.event_id] = row
    values = [
        {"event_id": r.event_id, "event_name": r.event_name, "format": r.format, "event_time": r.event_time,
         "received_at": r.received_at, "user_id": r.user_id, "context_type": r.context_type,
         "context_id": r.context_id, "payload": r.payload, "subscription": r.subscription,
         "root_account_uuid": r.root_account_uuid, "happening_id": r.happening_id or r.event_id,
         "request_id": r.request_id, "real_user_id": r.real_user_id, "user_login": r.user_login,
         "user_sis_id": r.user_sis_id, "root_account_id": r.root_account_id, "arrival": r.arrival}
        for r in sorted(best.values(), key=lambda r: r.event_id)
    ]
    if values:
        await conn.execute(_events_statement(), values)
    return len(values)
