"""Operator commands: ``canvas-stream quarantine list|retry``.

``retry`` re-publishes quarantined records (as they were received) to the deliveries topic, so the
workers normalize them again, e.g. after a mapping fix. The row is marked ``retried_at = now()``
and ``resolved = true`` *before* publishing; a record that fails again is quarantined again by the
worker, which sets its new reason and ``resolved = false``. Messages that are not canvas-stream
records at all (garbage bytes on the topic) cannot succeed by being replayed and are skipped.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import click

from canvas_stream.logs import configured_settings as _settings
from canvas_stream.records import RecordError, partition_key, record_from_bytes
from canvas_stream.settings import Settings

# The database and broker clients are imported inside the commands: cli.py imports this module
# for every command, and sqlalchemy + aiokafka + the tables cost ~1 s to import (python -X importtime).


@click.group(name="quarantine")
def quarantine() -> None:
    """See and replay messages the workers could not store (the quarantine table)."""


async def _rows(settings: Settings, limit: int, include_resolved: bool) -> list[dict[str, Any]]:
    from sqlalchemy import select
    from sqlalchemy.ext.asyncio import create_async_engine

    from processors.warehouse import tables

    q = tables.quarantine
    engine = create_async_engine(settings.require_database_url(), pool_size=1)
    try:
        stmt = select(q.c.id, q.c.received_at, q.c.source, q.c.reason, q.c.retried_at, q.c.resolved, q.c.raw)
        if not include_resolved:
            stmt = stmt.where(q.c.resolved.is_(False))
        stmt = stmt.order_by(q.c.received_at.desc(), q.c.id).limit(limit)
        async with engine.connect() as conn:
            return [dict(row._mapping) for row in await conn.execute(stmt)]
    finally:
        await engine.dispose()


@quarantine.command(name="list")
@click.option("--limit", type=int, default=50, show_default=True, help="Most rows to show (newest first).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line, with the raw record.")
@click.option("--include-resolved", is_flag=True, help="Also show rows already retried successfully.")
def list_command(limit: int, as_json: bool, include_resolved: bool) -> None:
    """List quarantined messages with their reasons."""
    rows = asyncio.run(_rows(_settings(), limit, include_resolved))
    if as_json:
        for row in rows:
            out = {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()}
            click.echo(json.dumps(out, ensure_ascii=False))
        return
    if not rows:
        click.echo("quarantine is empty")
        return
    for row in rows:
        retried = row["retried_at"].isoformat(timespec="seconds") if row["retried_at"] else "-"
        click.echo(f"{row['id'][:16]}  {row['received_at'].isoformat(timespec='seconds')}  "
                   f"{row['source'] or '-':<11} retried={retried}  {row['reason'][:160]}")


async def _retry(settings: Settings, ids: list[str] | None) -> tuple[int, int, list[str]]:
    from aiokafka import AIOKafkaProducer
    from sqlalchemy import func, select, update
    from sqlalchemy.ext.asyncio import create_async_engine

    from processors.warehouse import tables

    q = tables.quarantine
    engine = create_async_engine(settings.require_database_url(), pool_size=1)
    producer = AIOKafkaProducer(bootstrap_servers=settings.require_kafka(), acks="all",
                                max_request_size=4 * 1024 * 1024)
    published, skipped, missing = 0, 0, []
    started = False
    try:
        stmt = select(q.c.id, q.c.raw)
        stmt = stmt.where(q.c.id.in_(ids)) if ids else stmt.where(q.c.resolved.is_(False))
        async with engine.connect() as conn:
            rows = list(await conn.execute(stmt.order_by(q.c.received_at, q.c.id)))
        if ids:
            found = {r.id for r in rows}
            missing = [i for i in ids if i not in found]
        todo: list[tuple[str, bytes, bytes]] = []
        for row in rows:
            raw = row.raw.encode("utf-8", "surrogateescape")
            try:
                record = record_from_bytes(raw)
            except RecordError:
                skipped += 1
                continue
            todo.append((row.id, partition_key(record.payload, record.format), raw))
        if not todo:
            return published, skipped, missing
        async with engine.begin() as conn:  # first mark, so a quick re-quarantine is not overwritten
            await conn.execute(update(q).where(q.c.id.in_([t[0] for t in todo]))
                               .values(retried_at=func.now(), resolved=True))
        await producer.start()
        started = True
        failed: list[str] = []
        for row_id, key, raw in todo:
            try:
                await producer.send_and_wait(settings.kafka_topic, raw, key=key)
                published += 1
            except Exception:
                failed.append(row_id)
        if failed:
            async with engine.begin() as conn:
                await conn.execute(update(q).where(q.c.id.in_(failed)).values(resolved=False))
            raise click.ClickException(f"{len(failed)} records could not be published; they stay quarantined")
    finally:
        if started:
            await producer.stop()
        await engine.dispose()
    return published, skipped, missing


@quarantine.command(name="retry")
@click.option("--id", "ids", multiple=True, help="Quarantine id (repeatable; a unique prefix is not enough).")
@click.option("--all", "retry_all", is_flag=True, help="Retry every unresolved quarantined record.")
def retry_command(ids: tuple[str, ...], retry_all: bool) -> None:
    """Re-publish quarantined records to the deliveries topic (after a mapping fix)."""
    if bool(ids) == retry_all:
        raise click.UsageError("give --id ID (one or more) or --all")
    published, skipped, missing = asyncio.run(_retry(_settings(), list(ids) or None))
    for row_id in missing:
        click.echo(f"not found: {row_id}", err=True)
    click.echo(f"re-published {published} record(s); skipped {skipped} that are not canvas-stream records")
    if missing:
        raise SystemExit(1)
