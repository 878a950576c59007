"""Operator commands for history: ``canvas-stream partitions list|ensure`` and ``retention apply``.

Each opens its own engine, does one job and prints what it did (or, with ``--dry-run``, what it
would do). docs/retention.md describes them for the operator and the data protection officer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

import click

from canvas_stream.logs import configured_settings as _settings
from canvas_stream.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from processors.warehouse.retention import Policy

# The database clients are imported inside the commands (cli.py imports this module for every command).

T = TypeVar("T")


def _with_engine(settings: Settings, job: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    from sqlalchemy.ext.asyncio import create_async_engine

    async def go() -> T:
        engine = create_async_engine(settings.require_database_url(), pool_size=2)
        try:
            return await job(engine)
        finally:
            await engine.dispose()

    return asyncio.run(go())


def _policy(settings: Settings) -> Policy:
    from processors.warehouse.retention import Policy, PolicyError

    try:
        return Policy(settings.retention_months)
    except PolicyError as exc:
        raise click.UsageError(str(exc)) from exc


@click.group(name="partitions")
def partitions_group() -> None:
    """Monthly partitions of events and the fact tables (docs/retention.md)."""


@partitions_group.command(name="ensure")
@click.option("--ahead", type=click.IntRange(1, 120), default=None,
              help="Months ahead (default: PARTITIONS_AHEAD_MONTHS).")
def partitions_ensure(ahead: int | None) -> None:
    """Create every missing month up to AHEAD months from now (idempotent; workers do it hourly)."""
    from processors.warehouse.partitions import ensure_partitions

    settings = _settings()
    months = ahead if ahead is not None else settings.partitions_ahead_months
    created = _with_engine(settings, lambda engine: ensure_partitions(engine, ahead=months))
    click.echo(f"created {len(created)} partition(s)" + (": " + ", ".join(created) if created else ""))


@partitions_group.command(name="list")
def partitions_list() -> None:
    """Each history table's partitions, with the planner's estimate of their rows."""
    from processors.warehouse.partitions import estimated_rows, list_partitions

    async def job(engine: AsyncEngine) -> list[str]:
        async with engine.begin() as conn:
            out = []
            for table, parts in (await list_partitions(conn)).items():
                for p in parts:
                    lower = "MINVALUE" if p.lower is None else str(p.lower)
                    rows = await estimated_rows(conn, p.name)
                    out.append(f"{table:28} {p.name:40} [{lower}, {p.upper})  ~{rows} rows")
            return out

    for line in _with_engine(_settings(), job):
        click.echo(line)


@click.group(name="retention")
def retention_group() -> None:
    """Drop history past RETENTION_MONTHS and prune rows deleted in Canvas long ago (docs/retention.md)."""


@retention_group.command(name="apply")
@click.option("--dry-run", is_flag=True, help="Only say what would go; change nothing.")
def retention_apply(dry_run: bool) -> None:
    """Drop whole months past retention; delete rows deleted in Canvas (or received) before it."""
    from processors.warehouse.retention import apply

    settings = _settings()
    policy = _policy(settings)
    if not policy.months:
        click.echo("RETENTION_MONTHS is empty: everything is kept")
        return
    report = _with_engine(settings, lambda engine: apply(
        engine, policy, dry_run=dry_run, lock_timeout_ms=settings.retention_lock_timeout_ms,
        ahead=settings.partitions_ahead_months))
    for line in report.lines():
        click.echo(line)
    if any(a.skipped for a in report.actions):
        raise SystemExit(1)
