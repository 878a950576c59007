"""The embedded services really work: Kafka protocol, consumer groups, PostgreSQL persistence."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
import psutil
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from canvas_stream.embedded.broker import EmbeddedKafka, kafka_api_versions_ok
from canvas_stream.embedded.database import EmbeddedPostgres
from canvas_stream.embedded.process import free_port
from canvas_stream.settings import plain_database_url
from ingest.publish import ensure_topic
from tests.support.databases import wait_for_postgres


async def _drain(consumers: list[AIOKafkaConsumer], expected: int, timeout: float = 30.0):
    got: dict[int, list[tuple[int, bytes]]] = {i: [] for i in range(len(consumers))}
    deadline = time.monotonic() + timeout
    while sum(len(v) for v in got.values()) < expected and time.monotonic() < deadline:
        for i, consumer in enumerate(consumers):
            batch = await consumer.getmany(timeout_ms=200)
            for tp, messages in batch.items():
                got[i].extend((tp.partition, m.value) for m in messages)
            if batch:
                await consumer.commit()
    return got


async def test_produce_consume_group_two_partitions(kafka_bootstrap: str, unique_topic: str) -> None:
    topic = unique_topic + "events"
    await ensure_topic(kafka_bootstrap, topic, 2)
    await ensure_topic(kafka_bootstrap, topic, 2)  # already exists: tolerated

    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for i in range(10):
            await producer.send_and_wait(topic, f"m{i}".encode(), partition=i % 2)
    finally:
        await producer.stop()

    group = unique_topic + "group"
    consumers = [
        AIOKafkaConsumer(
            topic,
            bootstrap_servers=kafka_bootstrap,
            group_id=group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            heartbeat_interval_ms=300,
            session_timeout_ms=6000,  # tansu holds a new group's first join for half of it (aiokafka: 10 s)
        )
        for _ in range(2)
    ]
    await asyncio.gather(*(consumer.start() for consumer in consumers))
    try:
        got = await _drain(consumers, expected=10)
        assignments = [c.assignment() for c in consumers]
    finally:
        for consumer in consumers:
            await consumer.stop()

    values = sorted(v for items in got.values() for _, v in items)
    assert values == sorted(f"m{i}".encode() for i in range(10))
    assert {p for items in got.values() for p, _ in items} == {0, 1}
    # The group split the two partitions between its two members.
    assert all(len(a) == 1 for a in assignments), assignments

    # Committed offsets are kept by the broker for the group.
    checker = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=group, enable_auto_commit=False)
    await checker.start()
    try:
        assert [await checker.committed(TopicPartition(topic, p)) for p in (0, 1)] == [5, 5]
    finally:
        await checker.stop()


def test_embedded_kafka_stop_leaves_nothing() -> None:
    kafka = EmbeddedKafka()
    bootstrap = kafka.start()
    host, _, port = bootstrap.rpartition(":")
    assert kafka_api_versions_ok(host, int(port))
    pid, log_path = kafka.pid, kafka.log_path
    assert pid is not None and log_path is not None and log_path.exists()
    kafka.stop()
    assert not psutil.pid_exists(pid)
    assert not log_path.exists()
    assert not kafka_api_versions_ok(host, int(port))
    kafka.stop()  # idempotent


async def test_database_answers(database_url: str) -> None:
    assert database_url.startswith("postgresql+asyncpg://")
    conn = await asyncpg.connect(plain_database_url(database_url))
    try:
        assert await conn.fetchval("select 1") == 1
        assert (await conn.fetchval("select current_database()")).startswith("cs_test_")
    finally:
        await conn.close()


async def test_database_answers_through_sqlalchemy(database_url: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(text("select 1"))).scalar_one() == 1
    finally:
        await engine.dispose()


async def _query(url: str, sql: str, *args: object):
    conn = await asyncpg.connect(plain_database_url(url))
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def test_embedded_postgres_persists_across_restart(server_dir: Path) -> None:
    data_dir = server_dir / "pgdata"
    pg = EmbeddedPostgres(data_dir)
    try:
        url = await asyncio.to_thread(pg.start)
        assert url.startswith("postgresql+asyncpg://") and url.endswith("/canvas_stream")
        await wait_for_postgres(url, timeout=10)
        await _query(url, "create table kept (id int primary key, note text)")
        await _query(url, "insert into kept values (1, 'survives restart')")
        first_pid = pg.pid
        assert first_pid is not None
    finally:
        await asyncio.to_thread(pg.stop)
    assert not psutil.pid_exists(first_pid)
    assert (data_dir / "PG_VERSION").exists()  # persistent: not removed by stop()

    pg2 = EmbeddedPostgres(data_dir)
    try:
        url2 = await asyncio.to_thread(pg2.start)
        rows = await _query(url2, "select id, note from kept")
        assert [tuple(r) for r in rows] == [(1, "survives restart")]
        second_pid = pg2.pid
    finally:
        await asyncio.to_thread(pg2.stop)
    assert second_pid is not None and not psutil.pid_exists(second_pid)


async def test_embedded_postgres_temporary_dir_removed() -> None:
    with EmbeddedPostgres(database="other_db") as pg:
        assert pg.url.endswith("/other_db")
        rows = await _query(pg.url, "select current_database() as db")
        assert rows[0]["db"] == "other_db"
        data_dir, pid = pg.data_dir, pg.pid
        assert data_dir is not None and data_dir.exists()
    assert not data_dir.exists()
    assert pid is not None and not psutil.pid_exists(pid)


def test_free_port_is_bindable() -> None:
    import socket

    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
