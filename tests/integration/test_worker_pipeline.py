"""The pipelined worker (batch N written while batch N+1 is prepared) still moves Kafka offsets only
after the database transaction of the batches they cover committed: real worker process, real broker,
real PostgreSQL, and a lock that holds the worker's first transaction open."""

from __future__ import annotations

import asyncio

import asyncpg
from sqlalchemy import func, select

from canvas_stream.settings import plain_database_url
from ingest.publish import ensure_topic
from processors.warehouse import tables
from processors.warehouse.schema import SCHEMA
from tests.support.corpus import load_examples
from tests.support.procs import Role, role_env, running, wait_until
from tests.support.topics import committed, publish


async def waiting_on_events(conn: asyncpg.Connection) -> bool:
    """Some backend waits for a lock on the events table (the worker's insert, behind our lock)."""
    return bool(await conn.fetchval(
        "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = 'events' "
        "AND NOT l.granted", SCHEMA))


async def test_offsets_move_only_after_the_commit_while_the_next_batch_is_prepared(
        engine, kafka_bootstrap, unique_topic, migrated_database_url):
    topic, group = f"{unique_topic}-pipe", f"{unique_topic}-pipe-workers"
    await ensure_topic(kafka_bootstrap, topic, 1)
    records = [e.record().to_bytes() for e in load_examples() if e.kind == "event"][:90]
    await publish(kafka_bootstrap, topic, records)

    lock = await asyncpg.connect(plain_database_url(migrated_database_url))
    holding = lock.transaction()
    await holding.start()
    await lock.execute(f"LOCK TABLE {SCHEMA}.events IN SHARE MODE")  # inserts wait; the batch cannot commit
    released = False
    env = role_env(DATABASE_URL=migrated_database_url, KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap, KAFKA_TOPIC=topic,
                   KAFKA_PARTITIONS="1", WORKER_GROUP_ID=group, WORKER_BATCH_SIZE="30", WORKER_BATCH_SECONDS="0.1",
                   WORKER_SESSION_TIMEOUT_SECONDS="6")
    worker = Role("worker", env)
    try:
        with running(worker):
            await wait_until(lambda: waiting_on_events(lock), timeout=90,
                             message=f"the worker's insert waiting on the lock; log:\n{worker.output()}")
            # Meanwhile the agent returned from batch 1 and prepared the next: faust commits acked offsets
            # every second, so a premature ack would show here.
            await asyncio.sleep(4)
            assert await committed(kafka_bootstrap, topic, group) == 0
            async with engine.connect() as conn:
                assert (await conn.execute(select(func.count()).select_from(tables.events))).scalar_one() == 0

            await holding.rollback()
            released = True
            await wait_until(lambda: _committed_at_least(kafka_bootstrap, topic, group, len(records)), timeout=60,
                             message=f"all offsets committed; log:\n{worker.output()}")
            async with engine.connect() as conn:
                stored = (await conn.execute(select(func.count()).select_from(tables.events))).scalar_one()
            assert stored >= len(records)  # a Caliper envelope may hold several events
    finally:
        if not released:
            await holding.rollback()
        await lock.close()


async def _committed_at_least(bootstrap: str, topic: str, group: str, n: int) -> bool:
    return await committed(bootstrap, topic, group) >= n
