"""Rebuild the entity and fact tables from ``events`` (after a mapping fix or a new migration).

The stored payloads are exactly what the normalizers take, so a replay is the live path without
Kafka: page through the events in id order, normalize, upsert. ``rebuild`` empties the derived
tables first, so a corrected mapping wins even over values an older mapping set with the same
event versions; without it, a replay only fills what is missing (new tables or columns). Either
way running it twice gives the same tables, and live workers may keep running meanwhile: their
upserts and the replay's obey the same per-column version rule.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from canvas_stream.records import SOURCE_LIVE_EVENT, SOURCE_LTI_NOTICE, Record, Verification
from processors.normalize import IdPolicy, normalize
from processors.normalize.model import NormalizationError
from processors.warehouse import tables
from processors.warehouse.writer import QuarantineRow, insert_quarantine, upsert_changes


@dataclass(slots=True)
class ReplayStats:
    events: int = 0
    rows: int = 0
    quarantined: int = 0


def stored_record(fmt: str, payload: dict, received_at) -> Record:
    """The record an event row came from, as far as normalization needs it."""
    source = SOURCE_LTI_NOTICE if fmt == "lti_notice" else SOURCE_LIVE_EVENT
    return Record(source=source, format=fmt, received_at=received_at.isoformat(), payload=payload,
                  verification=Verification(signed=False))


async def replay(engine: AsyncEngine, ids: IdPolicy, *, rebuild: bool = True, page_size: int = 2000,
                 progress: Callable[[int], None] | None = None) -> ReplayStats:
    """Re-normalize every stored event; returns counts. ``progress`` is called with events done per page.

    ``ids`` must be the workers' (the home shard setting), or the rebuilt ids differ from theirs.
    """
    stats = ReplayStats()
    derived = [t for t in tables.warehouse_tables()]
    if rebuild:
        async with engine.begin() as conn:
            names = ", ".join(f"{tables.SCHEMA}.{t.name}" for t in derived)
            await conn.execute(text(f"TRUNCATE {names}"))
    events = tables.events
    last_id = ""
    while True:
        async with engine.begin() as conn:
            result = await conn.execute(
                select(events.c.event_id, events.c.format, events.c.payload, events.c.received_at)
                .where(events.c.event_id > last_id)
                .order_by(events.c.event_id)
                .limit(page_size)
            )
            page = result.all()
            if not page:
                return stats
            changes = []
            quarantined: list[QuarantineRow] = []
            for row in page:
                try:
                    normalized = normalize(stored_record(row.format, row.payload, row.received_at), ids)
                except NormalizationError as exc:
                    quarantined.append(QuarantineRow(f"replay {row.event_id}: {exc}", str(row.payload), "replay"))
                    continue
                # A Caliper envelope row holds one item, so it yields exactly this event's changes.
                changes.extend(normalized.changes)
            stats.rows += await upsert_changes(conn, changes)
            stats.quarantined += await insert_quarantine(conn, quarantined)
        stats.events += len(page)
        last_id = page[-1].event_id
        if progress is not None:
            progress(len(page))


async def count_events(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(tables.events))).scalar_one()
