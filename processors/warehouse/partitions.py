"""Monthly partitions of the history tables: naming and planning (pure), the DDL, and creating months ahead.

Layout of every history table (``events`` and the fact tables, range-partitioned on ``event_time``):
``<table>_before`` holds everything before the first kept month (``MINVALUE`` up to it: events
without a time, filed at the epoch, and very old ones), then one partition per month,
``<table>_pYYYYMM``, contiguous up to a few months ahead. There is no default partition: adding a
month would have to scan it under lock (to prove it holds no row of that month), rows it holds would
block adding their month, and it rules out ``DETACH ... CONCURRENTLY``. A row beyond the last month
is refused by PostgreSQL and quarantined with the reason, like any row the database refuses
(docs/retention.md).

New months are created as plain tables and then attached, which takes only a SHARE UPDATE EXCLUSIVE
lock on the parent: writers are never blocked by it (``CREATE TABLE ... PARTITION OF`` would take
ACCESS EXCLUSIVE). Concurrent callers (every worker, the retention run, ``canvas-stream partitions
ensure``) serialize on an advisory lock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from processors.warehouse.schema import SCHEMA, TABLE_SPECS

log = structlog.get_logger(__name__)

HISTORY_TABLES: tuple[str, ...] = tuple(name for name, spec in TABLE_SPECS.items() if spec.partitioned)
BEFORE_SUFFIX = "_before"
DEFAULT_AHEAD_MONTHS = 3
# pg_advisory_xact_lock key of partition DDL (creating months, retention's drops): 'cs-part'.
PARTITION_LOCK = 0x63732D70617274
_PARTITION_NAME = re.compile(r"^(?P<table>.+)_(?:p(?P<ym>\d{6})|before)$")
_BOUND = re.compile(r"FOR VALUES FROM \((?P<lo>MINVALUE|'[^']*')\) TO \((?P<hi>MAXVALUE|'[^']*')\)")


@dataclass(frozen=True, order=True, slots=True)
class Month:
    """A calendar month in UTC."""

    year: int
    month: int

    @classmethod
    def of(cls, moment: datetime) -> Month:
        utc = moment.astimezone(UTC)
        return cls(utc.year, utc.month)

    def add(self, months: int) -> Month:
        index = self.year * 12 + self.month - 1 + months
        return Month(index // 12, index % 12 + 1)

    def start(self) -> datetime:
        return datetime(self.year, self.month, 1, tzinfo=UTC)

    def literal(self) -> str:
        """The partition bound as an SQL literal (UTC, whatever the session's time zone)."""
        return f"'{self.year:04d}-{self.month:02d}-01 00:00:00+00'"

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"


@dataclass(frozen=True, slots=True)
class Partition:
    """One partition of a history table: ``[lower, upper)``; ``lower`` None means MINVALUE."""

    table: str
    name: str
    lower: Month | None
    upper: Month

    @property
    def is_before(self) -> bool:
        return self.lower is None

    def covers(self, month: Month) -> bool:
        return (self.lower is None or self.lower <= month) and month < self.upper


def partition_name(table: str, month: Month) -> str:
    return f"{table}_p{month.year:04d}{month.month:02d}"


def before_name(table: str) -> str:
    return table + BEFORE_SUFFIX


def is_partition_name(name: str | None) -> bool:
    """A partition of a history table (Alembic compares only the parents with the table definitions)."""
    match = _PARTITION_NAME.match(name or "")
    return bool(match) and match.group("table") in HISTORY_TABLES


def parent_of(name: str) -> str:
    """The history table a partition belongs to (by its name); any other name as it is."""
    match = _PARTITION_NAME.match(name)
    return match.group("table") if match and match.group("table") in HISTORY_TABLES else name


def _bound_month(literal: str) -> Month:
    moment = datetime.fromisoformat(literal.strip("'").replace(" ", "T"))
    return Month.of(moment if moment.tzinfo else moment.replace(tzinfo=UTC))


def parse_bound(table: str, name: str, expression: str) -> Partition:
    """``pg_get_expr(relpartbound)`` (read with TimeZone UTC) -> a Partition; ValueError for anything else."""
    match = _BOUND.fullmatch(expression.strip())
    if match is None or match.group("hi") == "MAXVALUE":
        raise ValueError(f"{name}: not a monthly range partition: {expression!r}")
    lower = None if match.group("lo") == "MINVALUE" else _bound_month(match.group("lo"))
    return Partition(table, name, lower, _bound_month(match.group("hi")))


def first_month(partitions: list[Partition], now: datetime) -> Month:
    """Where the monthly partitions start: the upper bound of ``_before``, else the oldest month."""
    before = [p.upper for p in partitions if p.is_before]
    if before:
        return before[0]
    monthly = [p.lower for p in partitions if p.lower is not None]
    return min(monthly) if monthly else Month.of(now)


def months_between(first: Month, last: Month) -> list[Month]:
    """Every month from ``first`` to ``last``, both included."""
    out, month = [], first
    while month <= last:
        out.append(month)
        month = month.add(1)
    return out


def months_to_create(partitions: list[Partition], now: datetime, ahead: int = DEFAULT_AHEAD_MONTHS) -> list[Month]:
    """Months from the first month up to ``ahead`` months after ``now`` that no partition covers."""
    return [m for m in months_between(first_month(partitions, now), Month.of(now).add(ahead))
            if not any(p.covers(m) for p in partitions)]


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def qualified(name: str, schema: str = SCHEMA) -> str:
    return f"{_q(schema)}.{_q(name)}"


def create_partition_sql(table: str, name: str, lower: Month | None, upper: Month,
                         schema: str = SCHEMA) -> list[str]:
    """A table like the parent, then attached: SHARE UPDATE EXCLUSIVE on the parent only, so writers go on.

    The parent's indexes (its key included) are created on the new, empty table by the ATTACH.
    """
    lo = "MINVALUE" if lower is None else lower.literal()
    return [f"CREATE TABLE {qualified(name, schema)} (LIKE {qualified(table, schema)} INCLUDING DEFAULTS "
            "INCLUDING CONSTRAINTS INCLUDING STORAGE INCLUDING COMPRESSION)",
            f"ALTER TABLE {qualified(table, schema)} ATTACH PARTITION {qualified(name, schema)} "
            f"FOR VALUES FROM ({lo}) TO ({upper.literal()})"]


def drop_partition_sql(table: str, name: str, schema: str = SCHEMA) -> list[str]:
    """Detach, then drop: ACCESS EXCLUSIVE on the parent for milliseconds (the caller bounds the wait)."""
    return [f"ALTER TABLE {qualified(table, schema)} DETACH PARTITION {qualified(name, schema)}",
            f"DROP TABLE {qualified(name, schema)}"]


# --- I/O ----------------------------------------------------------------------------------------

async def list_partitions(conn: AsyncConnection) -> dict[str, list[Partition]]:
    """Every history table's partitions, ``_before`` first, then by month (sets TimeZone UTC locally)."""
    await conn.execute(text("SET LOCAL TimeZone = 'UTC'"))
    rows = await conn.execute(text("""
        SELECT parent.relname, child.relname, pg_get_expr(child.relpartbound, child.oid)
        FROM pg_inherits i
        JOIN pg_class parent ON parent.oid = i.inhparent
        JOIN pg_class child ON child.oid = i.inhrelid
        JOIN pg_namespace n ON n.oid = parent.relnamespace
        WHERE n.nspname = :schema AND parent.relname = ANY(:tables) AND parent.relkind = 'p'
    """), {"schema": SCHEMA, "tables": list(HISTORY_TABLES)})
    found: dict[str, list[Partition]] = {name: [] for name in HISTORY_TABLES}
    for table, name, expression in rows:
        found[table].append(parse_bound(table, name, expression))
    for parts in found.values():
        parts.sort(key=lambda p: (p.lower is not None, p.lower or Month(1, 1)))
    return found


async def create_partition(conn: AsyncConnection, table: str, name: str, lower: Month | None, upper: Month) -> None:
    for statement in create_partition_sql(table, name, lower, upper):
        await conn.execute(text(statement))


async def estimated_rows(conn: AsyncConnection, name: str) -> int:
    """The planner's row estimate of a partition (instant; an exact count of a big month is not)."""
    found = (await conn.execute(text("SELECT greatest(reltuples, 0)::bigint FROM pg_class "
                                     "WHERE oid = CAST(:name AS regclass)"), {"name": qualified(name)})).scalar()
    return int(found or 0)


async def ensure_partitions_in(conn: AsyncConnection, now: datetime, ahead: int) -> list[str]:
    """In the caller's transaction (holding PARTITION_LOCK): create the missing months; their names."""
    created = []
    for table, parts in (await list_partitions(conn)).items():
        if not parts:  # not partitioned yet (before migration 0014) or partitioned by hand: nothing to do
            continue
        for month in months_to_create(parts, now, ahead):
            await create_partition(conn, table, partition_name(table, month), month, month.add(1))
            created.append(partition_name(table, month))
    return created


async def ensure_partitions(engine: AsyncEngine, *, ahead: int = DEFAULT_AHEAD_MONTHS, now: datetime | None = None,
                            lock_timeout_ms: int = 2000) -> list[str]:
    """Create every missing month up to ``ahead`` months ahead, for every history table; idempotent."""
    now = now or datetime.now(UTC)
    async with engine.begin() as conn:
        await conn.execute(text(f"SET LOCAL lock_timeout = {int(lock_timeout_ms)}"))
        await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PARTITION_LOCK})
        created = await ensure_partitions_in(conn, now, ahead)
    if created:
        log.info("partitions created", count=len(created), first=created[0], last=created[-1])
    return created
