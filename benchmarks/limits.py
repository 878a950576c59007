"""In-process limit measurements: raw RS256 verify, aiokafka produce/consume, PostgreSQL COPY."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from .minimal import _b64


def raw_verify_rate(tokens: list[bytes], key: Any, seconds: float = 2.0) -> float:
    """RSA-2048 PKCS#1 v1.5 SHA-256 verifications per second on one core (cryptography directly)."""
    pub = key.public_key()
    parts = []
    for t in tokens[:2000]:
        h, p, s = t.split(b".")
        parts.append((h + b"." + p, _b64(s)))
    n = 0
    started = time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        for signing_input, sig in parts[:200]:
            pub.verify(sig, signing_input, padding.PKCS1v15(), hashes.SHA256())
        n += 200
    return n / (time.perf_counter() - started)


async def kafka_produce_consume(bootstrap: str, topic: str, values: list[bytes],
                                consume: bool = True) -> tuple[float, float]:
    """msg/s producing ``values`` (acks=all, pipelined) and consuming them back from the start."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                                max_request_size=4 * 1024 * 1024, max_batch_size=256 * 1024)
    await producer.start()
    try:
        started = time.perf_counter()
        futures = [await producer.send(topic, v, key=str(i % 97).encode()) for i, v in enumerate(values)]
        await asyncio.gather(*futures)
        produced = len(values) / (time.perf_counter() - started)
    finally:
        await producer.stop()
    if not consume:
        return produced, 0.0
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None,
                                max_partition_fetch_bytes=8 * 1024 * 1024, fetch_max_bytes=64 * 1024 * 1024)
    await consumer.start()
    try:
        n = 0
        started = time.perf_counter()
        while n < len(values):
            batches = await consumer.getmany(timeout_ms=1000, max_records=5000)
            n += sum(len(b) for b in batches.values())
            if time.perf_counter() - started > 120:
                break
        consumed = n / (time.perf_counter() - started)
    finally:
        await consumer.stop()
    return produced, consumed


def event_rows(records: list[bytes]) -> list[tuple]:
    """events rows, exactly as the worker writes them (the project's normalizers and the writer's columns)."""
    from processors.batch import prepare
    from processors.normalize import IdPolicy
    from processors.warehouse.writer import collapse_events, event_columns

    columns = event_columns(collapse_events(prepare(records, IdPolicy()).normalized().events))
    return [dict(zip(columns, row, strict=True)) for row in zip(*columns.values(), strict=True)]


async def copy_rate(dsn: str, rows: list[dict[str, Any]], compression: str | None = None) -> float:
    """rows/s of COPY into a table shaped like the events table (1,000-row COPYs, one transaction each)."""
    import asyncpg

    from processors.warehouse.schema import SCHEMA

    conn = await asyncpg.connect(dsn)
    name = f"bench_copy_{compression or 'default'}"
    try:
        await conn.execute(f"DROP TABLE IF EXISTS {name}")
        await conn.execute(f"CREATE TABLE {name} (LIKE {SCHEMA}.events INCLUDING ALL)")
        if compression:
            await conn.execute(f"ALTER TABLE {name} ALTER COLUMN payload SET COMPRESSION {compression}")
        columns = list(rows[0])
        records = [tuple(row.values()) for row in rows]
        started = time.perf_counter()
        for i in range(0, len(records), 1000):
            async with conn.transaction():
                await conn.copy_records_to_table(name, records=records[i:i + 1000], columns=columns)
        rate = len(rows) / (time.perf_counter() - started)
        await conn.execute(f"DROP TABLE {name}")
        return rate
    finally:
        await conn.close()


def now() -> str:
    return datetime.now(UTC).isoformat()
