"""The ingress spool against a real broker: spooling while it is dead, draining in order when it is back."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer

from canvas_stream.embedded.process import free_port
from ingest.publish import KafkaPublisher, SpoolFullError, ensure_topic
from ingest.spool import SUFFIX, Spool, encode_record


async def test_dead_broker_spools_then_a_restarted_ingress_drains_in_order(tmp_path, kafka_bootstrap, unique_topic):
    topic = f"{unique_topic}spool"
    dead = KafkaPublisher(f"127.0.0.1:{free_port()}", topic, ack_timeout=1, spool=Spool(tmp_path, 1 << 20))
    await dead.start()
    try:
        await dead.publish(b"k0", b"v0")  # waits for the ack timeout, then spools
        await asyncio.gather(*(dead.publish(k, v) for k, v in [(b"k1", b"v1"), (b"k2", b"v2")]))
        assert dead.spool_stats()["records"] == 3
    finally:
        await dead.stop()

    await ensure_topic(kafka_bootstrap, topic, 1)
    live = KafkaPublisher(kafka_bootstrap, topic, ack_timeout=5, spool=Spool(tmp_path, 1 << 20))
    await live.start()
    try:
        assert live.spool.pending == 3
        await live.publish(b"k3", b"v3")  # behind the spooled ones
        for _ in range(100):
            if live.spool.pending == 0:
                break
            await asyncio.sleep(0.1)
        assert live.spool.pending == 0
        assert not list(tmp_path.glob(f"*{SUFFIX}"))
    finally:
        await live.stop()

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await consumer.start()
    try:
        got: list[tuple[bytes, bytes]] = []
        for _ in range(20):
            batch = await consumer.getmany(timeout_ms=500)
            got += [(m.key, m.value) for msgs in batch.values() for m in msgs]
            if len(got) >= 4:
                break
    finally:
        await consumer.stop()
    assert got == [(b"k0", b"v0"), (b"k1", b"v1"), (b"k2", b"v2"), (b"k3", b"v3")]


async def test_full_spool_with_dead_broker_is_a_clear_failure(tmp_path):
    frame = len(encode_record(b"k", b"v"))
    publisher = KafkaPublisher(f"127.0.0.1:{free_port()}", "t", ack_timeout=0.5,
                               spool=Spool(tmp_path, frame + 1))
    await publisher.start()
    try:
        await publisher.publish(b"k", b"v")
        with pytest.raises(SpoolFullError) as info:
            await publisher.publish(b"k", b"v")
        assert "spool full" in info.value.public
    finally:
        await publisher.stop()
