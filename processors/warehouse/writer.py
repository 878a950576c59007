"""The one place that writes to the warehouse: batched, collapsed, order-safe upserts.

Rule analysts can rely on: each column holds the value of the latest event (by event time, ties
broken by event id) that carried that column. Changes to the same row within a batch are merged
in Python first (PostgreSQL cannot touch a row twice in one statement); the same rule is then
applied in SQL against the stored ``field_versions``, so any order or number of deliveries ends
in identical tables.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Table, case, func, not_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from canvas_stream.errors import CanvasStreamError
from processors.normalize.model import EventRow, RowChange

from . import tables

_TABLES: dict[str, Table] = {t.name: t for t in tables.warehouse_tables()}
_EMPTY_ROWS: dict[str, dict[str, None]] = {name: dict.fromkeys(t.c.keys()) for name, t in _TABLES.items()}


class UnknownColumn(CanvasStreamError, ValueError):
    """A row change names a table or column the warehouse does not have: a normalizer bug.

    Normalizers produce valid changes by construction (the event map is checked against
    ``schema`` when compiled; tests cover the LTI normalizer), so the writer does not validate
    every column. It only notices, at the cost of one length comparison per row, a change that
    does not fit; as a ValueError the sink treats it as poison and quarantines the message.
    """


@dataclass(slots=True)
class MergedChange:
    """All changes to one row in a batch, merged by the per-column latest-version rule."""

    table: str
    key: dict[str, Any]
    fields: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)

    def apply(self, change: RowChange) -> None:
        for column, value in change.fields.items():
            current = self.versions.get(column)
            if current is None or change.version > current:
                self.fields[column] = value
                self.versions[column] = change.version


@dataclass(slots=True)
class QuarantineRow:
    reason: str
    raw: str
    source: str | None = None

    @property
    def id(self) -> str:
        return hashlib.sha256(self.raw.encode("utf-8", "surrogatepass")).hexdigest()


def collapse(changes: Iterable[RowChange]) -> list[MergedChange]:
    """Merge changes per (table, key); the result does not depend on the input order."""
    merged: dict[tuple[str, tuple[Any, ...]], MergedChange] = {}
    for change in changes:
        key = (change.table, tuple(sorted(change.key.items())))
        row = merged.get(key)
        if row is None:
            row = merged[key] = MergedChange(change.table, dict(change.key))
        row.apply(change)
    return list(merged.values())


def collapse_events(rows: Iterable[EventRow]) -> list[EventRow]:
    """One row per event id, keeping the earliest receipt (duplicates in one batch are common)."""
    best: dict[str, EventRow] = {}
    for row in rows:
        seen = best.get(row.event_id)
        if seen is None or row.received_at < seen.received_at:
            best[row.event_id] = row
    return list(best.values())


def _version_time(version: str) -> datetime:
    return datetime.fromisoformat(version.split("|", 1)[0].replace("Z", "+00:00"))


@functools.cache
def _upsert_statement(table: Table):
    """One statement per table, built and compiled once, run with executemany for every batch.

    Each data column takes the incoming value only when its version is newer than the stored one;
    ``field_versions`` keeps the newest version per column; an all-older delivery changes nothing.
    """
    stmt = insert(table)
    excluded = stmt.excluded
    functions = getattr(func, table.schema)  # newer() and merge_versions() live beside the tables
    key_names = [c.name for c in table.primary_key.columns]
    data_columns = [c for c in table.c if c.name not in key_names and c.name not in tables.VERSION_COLUMNS]
    set_: dict[str, Any] = {
        c.name: case(
            (
                functions.newer(
                    excluded.field_versions[c.name].astext, table.c.field_versions[c.name].astext
                ),
                excluded[c.name],
            ),
            else_=table.c[c.name],
        )
        for c in data_columns
    }
    set_["field_versions"] = functions.merge_versions(table.c.field_versions, excluded.field_versions)
    set_["last_event_at"] = func.greatest(table.c.last_event_at, excluded.last_event_at)
    return stmt.on_conflict_do_update(
        index_elements=key_names,
        set_=set_,
        where=not_(table.c.field_versions.contains(excluded.field_versions)),
    )


@functools.cache
def _events_statement():
    stmt = insert(tables.events)
    return stmt.on_conflict_do_update(
        index_elements=["event_id"],
        # the earliest receipt also names the subscription that delivered first (when it knows one),
        # and is the delivery a replay rebuilds
        set_={"received_at": stmt.excluded.received_at,
              "subscription": func.coalesce(stmt.excluded.subscription, tables.events.c.subscription),
              "arrival": func.coalesce(stmt.excluded.arrival, tables.events.c.arrival)},
        where=stmt.excluded.received_at < tables.events.c.received_at,
    )


async def upsert_changes(conn: AsyncConnection, changes: Iterable[RowChange]) -> int:
    """Collapse and upsert; returns the number of distinct rows written."""
    by_table: dict[str, list[dict[str, Any]]] = {}
    for row in collapse(changes):
        empty = _EMPTY_ROWS.get(row.table)
        if empty is None:
            raise UnknownColumn(f"unknown table {row.table!r}")
        values: dict[str, Any] = empty.copy()
        values.update(row.key)
        values.update(row.fields)
        if len(values) != len(empty):
            raise UnknownColumn(f"unknown column in {row.table}: {sorted(set(values) - set(empty))}")
        values["field_versions"] = row.versions
        values["last_event_at"] = _version_time(max(row.versions.values())) if row.versions else None
        by_table.setdefault(row.table, []).append(values)
    count = 0
    for name in sorted(by_table):  # a fixed order keeps concurrent workers from deadlocking
        table = _TABLES[name]
        rows = sorted(by_table[name], key=lambda r: tuple(str(r[c.name]) for c in table.primary_key.columns))
        await conn.execute(_upsert_statement(table), rows)
        count += len(rows)
    return count


async def insert_events(conn: AsyncConnection, rows: Iterable[EventRow]) -> int:
    """Insert distinct events; a repeat delivery only lowers ``received_at`` to the earliest."""
    values = [
        {
            "event_id": r.event_id,
            "event_name": r.event_name,
            "format": r.format,
            "event_time": r.event_time,
            "received_at": r.received_at,
            "user_id": r.user_id,
            "context_type": r.context_type,
            "context_id": r.context_id,
            "payload": r.payload,
            "subscription": r.subscription,
            "root_account_uuid": r.root_account_uuid,
            "happening_id": r.happening_id or r.event_id,
            "request_id": r.request_id,
            "real_user_id": r.real_user_id,
            "user_login": r.user_login,
            "user_sis_id": r.user_sis_id,
            "root_account_id": r.root_account_id,
            "arrival": r.arrival,
        }
        for r in sorted(collapse_events(rows), key=lambda r: r.event_id)
    ]
    if values:
        await conn.execute(_events_statement(), values)
    return len(values)


def _without_nul(text: str) -> str:
    """PostgreSQL text cannot hold NUL; keep it visible instead of failing the quarantine."""
    return text.replace("\x00", "\\u0000")


async def insert_quarantine(conn: AsyncConnection, rows: Iterable[QuarantineRow]) -> int:
    """Keep what could not be normalized, once per distinct raw message."""
    values = {
        r.id: {"id": r.id, "reason": r.reason[:2000], "source": r.source, "raw": _without_nul(r.raw)}
        for r in rows
    }
    if not values:
        return 0
    stmt = insert(tables.quarantine).values(list(values.values()))
    stmt = stmt.on_conflict_do_update(
        index_elements=["id"],
        set_={"reason": stmt.excluded.reason, "resolved": False},
    )
    await conn.execute(stmt)
    return len(values)
