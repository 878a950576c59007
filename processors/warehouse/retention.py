"""Retention: drop whole months of history past their retention, prune rows Canvas deleted long ago.

* History tables (partitioned by month) lose whole partitions: a month goes once all of it is older
  than the table's retention (so rows live between N and N+1 months), by ``DETACH`` + ``DROP`` of
  the partition. Never a row-by-row ``DELETE``: no dead tuples, no vacuum debt, the space back at
  once. ``<table>_before`` (undated and very old rows) is replaced by an empty one that ends at the
  new first month, in the same transaction, so every time keeps a partition.
* Entity tables with ``workflow_state`` lose rows deleted in Canvas (``'deleted'``) whose last event
  is older than the retention; ``quarantine`` and ``lti_notices`` lose rows received before it.
  These are plain tables: small batched ``DELETE``s in short transactions.

Dropping a partition needs ACCESS EXCLUSIVE on the parent for a few milliseconds; while it *waits*
for that lock (a long analyst query holds ACCESS SHARE) every writer queues behind it. So the DDL runs
with a short ``lock_timeout``, gives up when it cannot have the lock in time (the writers go through)
and retries with backoff: writers wait at most about that long (measured in
tests/faults/test_retention_under_load.py, docs/retention.md).

Planning (:func:`plan_history`, :class:`Policy`) is pure; :func:`apply` does the I/O.
"""

from __future__ import annotations

import asyncio
import calendar
import json
import socket
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta

import structlog
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from canvas_stream.errors import CanvasStreamError
from processors.warehouse import partitions
from processors.warehouse.partitions import Month, Partition, before_name, create_partition, qualified
from processors.warehouse.schema import TABLE_SPECS

log = structlog.get_logger(__name__)

ALL = "*"
# Plain tables whose rows expire by when they were received (not by Canvas deleting them).
RECEIVED_TABLES = {"quarantine": "received_at", "lti_notices": "received_at"}
# pg_try_advisory_lock key of the scheduled run ('cs-ret'): one worker at a time runs it.
RETENTION_LOCK = 0x63732D726574
LOCK_NOT_AVAILABLE = "55P03"
DELETE_BATCH = 5000
DEFAULT_LOCK_TIMEOUT_MS = 500
DEFAULT_ATTEMPTS = 20


class PolicyError(CanvasStreamError, ValueError):
    """A retention setting names a table retention cannot apply to, or a bad number of months."""


def eligible_tables() -> dict[str, str]:
    """Table -> how retention applies to it: 'partitions', 'deleted' or 'received'."""
    out: dict[str, str] = {}
    for name, spec in TABLE_SPECS.items():
        if spec.partitioned:
            out[name] = "partitions"
        elif name in RECEIVED_TABLES:
            out[name] = "received"
        elif spec.versioned and "workflow_state" in spec.data_columns:
            out[name] = "deleted"
    return out


@dataclass(frozen=True)
class Policy:
    """Months to keep per table (``RETENTION_MONTHS``); ``*`` for every table not named; empty: keep all."""

    months: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        eligible = eligible_tables()
        for name, months in self.months.items():
            if name != ALL and name not in TABLE_SPECS:
                raise PolicyError(f"RETENTION_MONTHS names an unknown table {name!r}")
            if name != ALL and name not in eligible:
                raise PolicyError(f"RETENTION_MONTHS: retention cannot apply to {name!r} (no history partitions, "
                                  "no workflow_state, no receipt time)")
            if not isinstance(months, int) or isinstance(months, bool) or months < 1:
                raise PolicyError(f"RETENTION_MONTHS[{name!r}] must be a whole number of months >= 1")

    def for_table(self, table: str) -> int | None:
        return self.months.get(table, self.months.get(ALL))

    def tables(self) -> dict[str, tuple[str, int]]:
        """Table -> (how, months) for every table the policy keeps for a limited time."""
        out = {}
        for name, how in eligible_tables().items():
            months = self.for_table(name)
            if months is not None:
                out[name] = (how, months)
        return out


@dataclass(frozen=True)
class HistoryPlan:
    """What retention does to one history table: months to drop, and the new end of ``_before``."""

    table: str
    cutoff: Month  # the first month kept
    drop: tuple[Partition, ...]
    new_floor: Month | None  # replace ``_before`` to end here (None: leave it)


def plan_history(table: str, parts: list[Partition], months: int, now: datetime,
                 before_has_rows: bool) -> HistoryPlan:
    """Months entirely older than ``months`` go; ``_before`` is emptied once all of it is past retention."""
    cutoff = Month.of(now).add(-months)
    drop = tuple(p for p in parts if not p.is_before and p.upper <= cutoff)
    floor = partitions.first_month(parts, now)
    new_floor = None
    if floor < cutoff or (before_has_rows and floor <= cutoff):
        new_floor = max(floor, cutoff)
    return HistoryPlan(table, cutoff, drop, new_floor)


def months_ago(now: datetime, months: int) -> datetime:
    """The same day and time ``months`` calendar months earlier (the last day of a shorter month)."""
    moment = now.astimezone(UTC)
    month = Month.of(moment).add(-months)
    day = min(moment.day, calendar.monthrange(month.year, month.month)[1])
    return moment.replace(year=month.year, month=month.month, day=day)


@dataclass
class Action:
    """One thing retention did (or would do, in a dry run)."""

    table: str
    what: str  # drop partition, empty before-partition, delete
    target: str
    rows: int | None = None
    estimated: bool = False
    skipped: str | None = None

    def describe(self) -> str:
        rows = "" if self.rows is None else f" ({'~' if self.estimated else ''}{self.rows} rows)"
        skipped = f" SKIPPED: {self.skipped}" if self.skipped else ""
        return f"{self.table}: {self.what} {self.target}{rows}{skipped}"


@dataclass
class Report:
    dry_run: bool
    actions: list[Action] = field(default_factory=list)
    created_partitions: list[str] = field(default_factory=list)
    skipped_run: str | None = None  # why a scheduled run did not run

    def lines(self) -> list[str]:
        if self.skipped_run:
            return [f"retention not run: {self.skipped_run}"]
        head = "would" if self.dry_run else "did"
        out = [f"{head}: {a.describe()}" for a in self.actions]
        return out or ["nothing is past retention"]


# --- I/O ----------------------------------------------------------------------------------------

def lock_not_available(exc: BaseException) -> bool:
    """PostgreSQL gave up waiting for a lock (``lock_timeout``)."""
    orig = getattr(exc, "orig", None)
    return getattr(orig, "sqlstate", None) == LOCK_NOT_AVAILABLE or LOCK_NOT_AVAILABLE in str(exc)


async def _history_once(conn: AsyncConnection, table: str, months: int, now: datetime, dry_run: bool,
                        lock_timeout_ms: int) -> list[Action]:
    """Plan and (unless dry) apply one table's drops in the caller's transaction."""
    if not dry_run:
        await conn.execute(text(f"SET LOCAL lock_timeout = {int(lock_timeout_ms)}"))
        await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": partitions.PARTITION_LOCK})
    parts = (await partitions.list_partitions(conn))[table]
    before = next((p for p in parts if p.is_before), None)
    has_rows = before is not None and bool(
        (await conn.execute(text(f"SELECT EXISTS (SELECT 1 FROM {qualified(before.name)})"))).scalar())
    plan = plan_history(table, parts, months, now, has_rows)
    actions = [Action(table, "drop partition", p.name, await partitions.estimated_rows(conn, p.name), estimated=True)
               for p in plan.drop]
    if plan.new_floor is not None:
        rows = await partitions.estimated_rows(conn, before.name) if before is not None else 0
        actions.append(Action(table, "empty before-partition", f"{before_name(table)} (now up to {plan.new_floor})",
                              rows, estimated=True))
    if dry_run or not actions:
        return actions
    # The first statement waits for the parent's lock (at most lock_timeout); the rest find it held.
    for p in plan.drop:
        for statement in partitions.drop_partition_sql(table, p.name):
            await conn.execute(text(statement))
    if plan.new_floor is not None:
        if before is not None:
            for statement in partitions.drop_partition_sql(table, before.name):
                await conn.execute(text(statement))
        await create_partition(conn, table, before_name(table), None, plan.new_floor)
    return actions


async def apply_history(engine: AsyncEngine, table: str, months: int, now: datetime, *, dry_run: bool,
                        lock_timeout_ms: int = DEFAULT_LOCK_TIMEOUT_MS, attempts: int = DEFAULT_ATTEMPTS,
                        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep) -> list[Action]:
    """One table, one short transaction; retried while the parent's lock is not available in time."""
    delay = 0.5
    for attempt in range(attempts):
        try:
            async with engine.begin() as conn:
                return await _history_once(conn, table, months, now, dry_run, lock_timeout_ms)
        except DBAPIError as exc:
            if not lock_not_available(exc):
                raise
            log.info("retention: lock not available in time, retrying", table=table, attempt=attempt + 1,
                     delay=delay)
            await sleep(delay)
            delay = min(delay * 2, 30.0)
    return [Action(table, "drop partitions", "(all due)", skipped=f"lock not available after {attempts} attempts")]


async def apply_rows(engine: AsyncEngine, table: str, how: str, months: int, now: datetime, *,
                     dry_run: bool) -> Action:
    """Delete (in batches) rows deleted in Canvas, or received, longer ago than ``months``."""
    cutoff = months_ago(now, months)
    if how == "deleted":
        condition, target = "workflow_state = 'deleted' AND last_event_at < :cutoff", "rows deleted in Canvas before"
    else:
        condition, target = f"{RECEIVED_TABLES[table]} < :cutoff", "rows received before"
    target = f"{target} {cutoff.date().isoformat()}"
    if dry_run:
        async with engine.connect() as conn:
            rows = (await conn.execute(text(f"SELECT count(*) FROM {qualified(table)} WHERE {condition}"),
                                       {"cutoff": cutoff})).scalar()
        return Action(table, "delete", target, int(rows or 0))
    total = 0
    while True:  # short transactions: no long row locks against the writers' upserts
        async with engine.begin() as conn:
            result = await conn.execute(text(
                f"DELETE FROM {qualified(table)} WHERE ctid = ANY(ARRAY("
                f"SELECT ctid FROM {qualified(table)} WHERE {condition} LIMIT {DELETE_BATCH}))"), {"cutoff": cutoff})
        total += max(result.rowcount or 0, 0)
        if (result.rowcount or 0) < DELETE_BATCH:
            return Action(table, "delete", target, total)


async def apply(engine: AsyncEngine, policy: Policy, *, dry_run: bool, now: datetime | None = None,
                trigger: str = "cli", lock_timeout_ms: int = DEFAULT_LOCK_TIMEOUT_MS,
                ahead: int = partitions.DEFAULT_AHEAD_MONTHS, attempts: int = DEFAULT_ATTEMPTS) -> Report:
    """The whole retention run: history months, expired rows, months ahead; recorded unless dry."""
    started = datetime.now(UTC)
    now = now or started
    report = Report(dry_run)
    for table, (how, months) in sorted(policy.tables().items()):
        if how == "partitions":
            report.actions += await apply_history(engine, table, months, now, dry_run=dry_run,
                                                  lock_timeout_ms=lock_timeout_ms, attempts=attempts)
        else:
            action = await apply_rows(engine, table, how, months, now, dry_run=dry_run)
            if action.rows:
                report.actions.append(action)
    if not dry_run:
        report.created_partitions = await partitions.ensure_partitions(engine, ahead=ahead, now=now,
                                                                       lock_timeout_ms=lock_timeout_ms * 4)
        if report.actions or trigger.startswith("scheduled"):
            await _record(engine, started, trigger, report)
    for action in report.actions:
        log.info("retention", dry_run=dry_run, action=action.describe())
    return report


async def _record(engine: AsyncEngine, started: datetime, trigger: str, report: Report) -> None:
    actions = [{k: v for k, v in asdict(a).items() if v is not None} for a in report.actions]
    async with engine.begin() as conn:
        await conn.execute(text(
            f"INSERT INTO {qualified('retention_runs')} (id, started_at, finished_at, trigger, actions) "
            "VALUES (:id, :started, now(), :trigger, CAST(:actions AS jsonb))"),
            {"id": str(uuid.uuid4()), "started": started, "trigger": trigger, "actions": json.dumps(actions)})


async def run_scheduled(engine: AsyncEngine, policy: Policy, interval: timedelta, *, now: datetime | None = None,
                        **options) -> Report:
    """The scheduled run: one worker at a time (a session advisory lock), at most once per ``interval``
    across all workers (the last finished scheduled run in ``retention_runs``, read under the lock)."""
    async with engine.connect() as conn:
        locked = (await conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": RETENTION_LOCK})).scalar()
        await conn.commit()
        if not locked:
            return Report(False, skipped_run="another worker holds the retention lock")
        try:
            last = (await conn.execute(text(
                f"SELECT max(finished_at) FROM {qualified('retention_runs')} WHERE trigger LIKE 'scheduled%'"))
                    ).scalar()
            await conn.commit()
            if last is not None and datetime.now(UTC) - last < interval:
                return Report(False, skipped_run=f"last scheduled run at {last.isoformat(timespec='seconds')}")
            return await apply(engine, policy, dry_run=False, now=now,
                               trigger=f"scheduled on {socket.gethostname()}", **options)
        finally:
            await conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": RETENTION_LOCK})
            await conn.commit()
