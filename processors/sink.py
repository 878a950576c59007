"""Write prepared batches to PostgreSQL in one transaction each, retrying until they land.

The Kafka offsets of a batch move only after this returns, so a crash anywhere before that
redelivers the batch (the upserts are idempotent). Before anything is written, the batch passes
the personal-data steps (``processors.privacy``): events naming a person on the erasure list are
dropped or redacted (``ErasureGuard``, re-checked in every write transaction), and with
``PSEUDONYMIZE`` logins, emails, IP addresses and user agents become keyed hashes; a message
quarantined here passes them too. A database outage blocks the batch and
retries with backoff; a message that violates a constraint is found by retrying the batch one
message at a time, and quarantined, so the partition never stalls.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import structlog
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from canvas_stream.metrics import DATABASE_RETRIES, ERASED_ON_ARRIVAL
from processors.batch import Item, PreparedBatch
from processors.normalize.model import Normalized
from processors.privacy.guard import ErasureGuard, SuppressionListChanged
from processors.privacy.pseudonymize import Pseudonymizer
from processors.warehouse.writer import (
    QuarantineRow,
    insert_events,
    insert_quarantine,
    upsert_changes,
    use_generic_plans,
)

log = structlog.get_logger(__name__)

# SQLSTATE classes that mean "this data is bad" (data exception, integrity violation). Anything
# else (connection loss, shutdown, a missing migration) is retried: never quarantine good events
# because of an operator problem.
POISON_SQLSTATE_CLASSES = ("22", "23")


def _chain(exc: BaseException):
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = getattr(current, "orig", None) or current.__cause__


def is_poison(exc: BaseException) -> bool:
    """The database (or the driver, encoding a parameter) refused this data itself."""
    for link in _chain(exc):
        state = getattr(link, "sqlstate", None)
        if isinstance(state, str):
            return state[:2] in POISON_SQLSTATE_CLASSES
        if isinstance(link, (DataError, IntegrityError)):
            return True
        if isinstance(link, (ValueError, TypeError, OverflowError)) and not isinstance(link, OSError):
            return True
    return False


def is_transient(exc: BaseException) -> bool:
    return not is_poison(exc)


class WarehouseSink:
    """Owns the engine; tracks readiness for the worker's status endpoint."""

    def __init__(self, engine: AsyncEngine, *, max_backoff: float = 10.0, guard: ErasureGuard | None = None,
                 pseudonymizer: Pseudonymizer | None = None) -> None:
        self.engine = engine
        self.guard = guard  # the erasure list, checked in every write transaction (workers always have one)
        self.pseudonymizer = pseudonymizer
        self.max_backoff = max_backoff
        self.ready = True
        self.last_commit_monotonic: float | None = None
        self.events_written = 0
        self.rows_written = 0
        self.quarantined = 0

    def _screen(self, batch: PreparedBatch) -> None:
        """Erased people out of the batch (pure, in place); the counts as metrics."""
        if self.guard is None:
            return
        before = dict(self.guard.counts)
        self.guard.screen_batch(batch)
        for action, total in self.guard.counts.items():
            if total > before.get(action, 0):
                ERASED_ON_ARRIVAL.labels(action).inc(total - before.get(action, 0))

    def _scrub_raw(self, raw: str) -> str:
        """A message quarantined here, as the batch's messages are: erased people and pseudonyms."""
        if self.guard is not None:
            raw = self.guard.screen_raw(raw)
        return self.pseudonymizer.raw(raw) if self.pseudonymizer is not None else raw

    async def _write(self, normalized: Normalized, quarantined: Sequence[QuarantineRow]) -> None:
        async with self.engine.begin() as conn:
            await use_generic_plans(conn)
            if self.guard is not None:
                await self.guard.verify(conn)  # raises SuppressionListChanged: screen again, retry
            self.events_written += await insert_events(conn, normalized.events)
            self.rows_written += await upsert_changes(conn, normalized.changes)
            self.quarantined += await insert_quarantine(conn, quarantined)

    async def _write_isolating_poison(self, items: Sequence[Item]) -> None:
        """One transaction per message; a message the database refuses is quarantined."""
        for item in items:
            if item.normalized is None:
                continue
            try:
                await self._write(item.normalized, [])
            except Exception as exc:
                if is_transient(exc):
                    raise
                reason = f"database refused: {exc.__class__.__name__}: {str(exc).splitlines()[0][:300]}"
                log.warning("message quarantined", reason=reason)
                raw = self._scrub_raw(item.raw.decode("utf-8", "backslashreplace"))
                item.quarantine = QuarantineRow(reason, raw, "kafka")
                item.normalized = None
        quarantined = [i.quarantine for i in items if i.quarantine is not None]
        await self._write(Normalized(), quarantined)

    async def write(self, batch: PreparedBatch) -> None:
        """Return only once the batch is committed; retry transient failures forever."""
        self._screen(batch)
        if self.pseudonymizer is not None:
            self.pseudonymizer.batch(batch)  # keyed hashes before anything is stored
        backoff = 0.2
        while True:
            try:
                try:
                    await self._write(batch.normalized(), batch.quarantined())
                except Exception as exc:
                    if is_transient(exc):
                        raise
                    log.warning("batch refused, isolating poison", error=exc.__class__.__name__)
                    await self._write_isolating_poison(batch.items)
            except SuppressionListChanged:
                self._screen(batch)  # the reloaded list: screen again and write at once
                continue
            except Exception as exc:
                if not is_transient(exc):
                    raise
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    # A cancel that a driver's wait_for turned into a timeout: stop, don't retry.
                    raise asyncio.CancelledError from exc
                self.ready = False
                DATABASE_RETRIES.inc()
                log.warning("database unavailable, retrying", error=exc.__class__.__name__, backoff=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff)
                continue
            self.ready = True
            self.last_commit_monotonic = time.monotonic()
            return
