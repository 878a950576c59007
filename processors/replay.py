"""Rebuild the warehouse from ``events`` (after a mapping fix or a new migration).

Each ``events`` row keeps the payload, the receipt time and the delivery's ``arrival`` (its
signature check, subscription or queue, the ingress's notes and, for an LTI notice, the JWT), which
together rebuild the record the worker normalized. So a replay is the live path without Kafka: page
through the events in id order, rebuild each record, normalize, upsert; the tables it leaves are the
live path's, LTI notices included. It also rewrites what ``events`` derives from the payload
(happening id, names, metadata columns), and an old row that the normalizer now reads as a Caliper
entity describe, not an event, leaves ``events`` for ``caliper_entities``.

``rebuild`` empties the derived tables first, so a corrected mapping wins even over values an older
mapping set with the same event versions; without it, a replay only fills what is missing (new
tables or columns). Either way running it twice gives the same tables, and live workers may keep
running meanwhile: their upserts and the replay's obey the same per-column version rule.

A row that no longer normalizes is quarantined as the record itself (JSON bytes a worker reads), so
``canvas-stream quarantine retry`` can re-publish it once the mapping is fixed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, delete, func, select, text, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from canvas_stream.records import (
    SOURCE_LIVE_EVENT,
    SOURCE_LTI_NOTICE,
    Record,
    RecordError,
    Verification,
    record_from_arrival,
)
from processors.normalize import IdPolicy, normalize
from processors.normalize.model import EventRow, Normalized
from processors.warehouse import tables
from processors.warehouse.schema import TABLE_SPECS
from processors.warehouse.writer import QuarantineRow, insert_quarantine, upsert_changes

# The columns of an events row that normalization derives (the rest is what was received).
DERIVED_EVENT_COLUMNS = ("event_name", "event_time", "user_id", "context_type", "context_id", "root_account_uuid",
                         "happening_id", "request_id", "real_user_id", "user_login", "user_sis_id",
                         "root_account_id")
ENTITY_TABLE = "caliper_entities"


@dataclass(slots=True)
class ReplayStats:
    events: int = 0
    rows: int = 0
    quarantined: int = 0
    events_updated: int = 0  # rows whose derived columns changed
    entities_moved: int = 0  # rows that were entity describes, not events


def stored_record(fmt: str, payload: dict, received_at, arrival: dict | None = None) -> Record:
    """The record an event row came from: exact from its arrival; for a row stored before arrival was
    kept (migration 0010), what normalization needs of it (LTI rows were given theirs by the migration)."""
    if arrival:
        return record_from_arrival(arrival, fmt=fmt, payload=payload, received_at=received_at.isoformat())
    source = SOURCE_LTI_NOTICE if fmt == "lti_notice" else SOURCE_LIVE_EVENT
    return Record(source=source, format=fmt, received_at=received_at.isoformat(), payload=payload,
                  verification=Verification(signed=False))


def rebuilt_tables() -> list:
    """The tables a rebuild empties: every table the writer fills from events (not caliper_entities,
    whose describes no events row keeps)."""
    return [t for t in tables.warehouse_tables() if TABLE_SPECS[t.name].rebuilt_by_replay]


@functools.cache
def _update_event_statement():
    events = tables.events
    columns = [events.c[name] for name in DERIVED_EVENT_COLUMNS]
    values = [bindparam(f"v_{c.name}", type_=c.type) for c in columns]
    return (
        update(events)
        .where(events.c.event_id == bindparam("v_event_id"))
        .where(tuple_(*columns).is_distinct_from(tuple_(*values)))
        .values({c.name: v for c, v in zip(columns, values, strict=True)})
    )


def _event_values(row: EventRow) -> dict[str, Any]:
    values = {f"v_{name}": getattr(row, name) for name in DERIVED_EVENT_COLUMNS}
    values["v_happening_id"] = row.happening_id or row.event_id
    values["v_event_id"] = row.event_id
    return values


async def _update_events(conn: AsyncConnection, rows: list[EventRow]) -> int:
    if not rows:
        return 0
    result = await conn.execute(_update_event_statement(), [_event_values(r) for r in rows])
    return max(result.rowcount, 0)


def _replay_one(row, ids: IdPolicy) -> tuple[Normalized | None, QuarantineRow | None]:
    """Normalize one stored event as the worker did; a failure becomes a quarantine row holding the record."""
    try:
        record = stored_record(row.format, row.payload, row.received_at, row.arrival)
    except RecordError as exc:  # the arrival is damaged: keep the record as far as the row tells it
        legacy = stored_record(row.format, row.payload, row.received_at)
        return None, QuarantineRow(f"replay {row.event_id}: {exc}", legacy.to_bytes().decode("utf-8"), "replay")
    raw = record.to_bytes().decode("utf-8")
    try:
        return normalize(record, ids), None
    except Exception as exc:  # the normalizer's error or bug: quarantined as on the live path, never fatal
        return None, QuarantineRow(f"replay {row.event_id}: {exc.__class__.__name__}: {str(exc)[:300]}", raw,
                                   "replay")


async def replay(engine: AsyncEngine, ids: IdPolicy, *, rebuild: bool = True, page_size: int = 2000,
                 progress: Callable[[int], None] | None = None) -> ReplayStats:
    """Re-normalize every stored event; returns counts. ``progress`` is called with events done per page.

    ``ids`` must be the workers' (the home shard setting), or the rebuilt ids differ from theirs.
    """
    stats = ReplayStats()
    if rebuild:
        async with engine.begin() as conn:
            names = ", ".join(f"{tables.SCHEMA}.{t.name}" for t in rebuilt_tables())
            await conn.execute(text(f"TRUNCATE {names}"))
    events = tables.events
    last_id = ""
    while True:
        async with engine.begin() as conn:
            result = await conn.execute(
                select(events.c.event_id, events.c.format, events.c.payload, events.c.received_at,
                       events.c.arrival)
                .where(events.c.event_id > last_id)
                .order_by(events.c.event_id)
                .limit(page_size)
            )
            page = result.all()
            if not page:
                return stats
            changes = []
            event_rows: list[EventRow] = []
            not_events: list[str] = []
            quarantined: list[QuarantineRow] = []
            for row in page:
                normalized, problem = _replay_one(row, ids)
                if normalized is None:
                    quarantined.append(problem)  # type: ignore[arg-type]
                    continue
                # A Caliper row holds one data[] item, so it yields exactly this event's row and changes.
                mine = [e for e in normalized.events if e.event_id == row.event_id]
                event_rows.extend(mine)
                if not mine and any(c.table == ENTITY_TABLE for c in normalized.changes):
                    not_events.append(row.event_id)  # an entity describe stored as an event before 0010
                changes.extend(normalized.changes)
            stats.rows += await upsert_changes(conn, changes)
            stats.events_updated += await _update_events(conn, event_rows)
            if not_events:
                await conn.execute(delete(events).where(events.c.event_id.in_(not_events)))
                stats.entities_moved += len(not_events)
            stats.quarantined += await insert_quarantine(conn, quarantined)
        stats.events += len(page)
        last_id = page[-1].event_id
        if progress is not None:
            progress(len(page))


async def count_events(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(tables.events))).scalar_one()
